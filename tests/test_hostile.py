"""Hostile files are refused quickly, in bounded memory, and never run code.

Each case runs the real CLI in a fresh process (`python -m costmodel.cli`), and
os.wait4 gives that one child's resource usage (peak resident memory), so the
memory check measures exactly that run.  Time is asserted loosely (< 5 s: CI
machines vary); the bound that matters is that no case scales with the
expanded size of its input (387 million strings, 2 million nesting levels).
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BAD = HERE / "bad_inputs"
GPT2 = (ROOT / "models" / "gpt2.yaml").read_text()

TIME_LIMIT_S = 5.0
EXTRA_MEMORY_KB = 64 * 1024      # above a run that fails on a 2-line file


def cli(*args):
    """(exit code, stdout, stderr, seconds, peak RSS in KiB) of one CLI run."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("COSTMODEL_DEBUG", None)
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "costmodel.cli", *map(str, args)], cwd=str(ROOT), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.stdout.read(), p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stdout.close()
    p.stderr.close()
    return p.returncode, out, err, dt, usage.ru_maxrss


@pytest.fixture(scope="module")
def baseline_kb(tmp_path_factory):
    f = tmp_path_factory.mktemp("base") / "small.yaml"
    f.write_text("name: x\narch: mlp\n")
    rc, _, err, _, rss = cli("estimate", f)
    assert rc == 2, err
    return rss


def refused(args, baseline_kb, *expect):
    rc, out, err, dt, rss = cli(*args)
    assert rc == 2, (rc, out[:300], err[:300])
    assert err.startswith("error: ") and err.count("\n") == 1, err[:500]
    assert "Traceback" not in err and "please report" not in err
    assert len(err) < 600, f"error line too long ({len(err)} chars)"
    for e in expect:
        assert e in err, err
    assert dt < TIME_LIMIT_S, f"took {dt:.2f} s"
    assert rss < baseline_kb + EXTRA_MEMORY_KB, f"peak RSS {rss / 1024:.0f} MiB vs {baseline_kb / 1024:.0f} MiB"
    return err


def refused_here(args, *expect):
    """The same checks in this process through click's CliRunner, for the cases whose
    danger is code execution or a bad message rather than size: peak memory is
    what tracemalloc saw allocated during the run (Python allocations)."""
    import tracemalloc
    from click.testing import CliRunner
    from costmodel.cli import main
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        r = CliRunner().invoke(main, [str(a) for a in args])
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = r.stderr
    assert r.exit_code == 2, (r.exit_code, r.output[:300])
    assert err.startswith("error: ") and err.count("\n") == 1, err[:500]
    assert "Traceback" not in r.output and "please report" not in err
    assert len(err) < 600, f"error line too long ({len(err)} chars)"
    for e in expect:
        assert e in err, err
    assert dt < TIME_LIMIT_S, f"took {dt:.2f} s"
    assert peak < EXTRA_MEMORY_KB * 1024, f"allocated {peak / 2**20:.0f} MiB"
    return err


def test_billion_laughs(baseline_kb):
    # 9 levels of 9 aliases: 387,420,489 strings if expanded
    refused(["estimate", BAD / "billion_laughs.yaml"], baseline_kb, "expands to more than 50000 values")


def test_billion_laughs_as_hardware_and_in_set():
    refused_here(["estimate", "gpt2", "-H", BAD / "billion_laughs.yaml"], "alias bomb")
    bomb = "{a: &a [x,x,x,x,x,x,x,x,x], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], " \
           "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], " \
           "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]}"
    refused_here(["estimate", "gpt2", "--set", f"model.name={bomb}"], "--set model.name", "alias bomb")


@pytest.mark.parametrize("n", [100_000, 2_000_000])
def test_deep_flow_nesting(tmp_path, baseline_kb, n):
    f = tmp_path / "deep.yaml"
    f.write_text("[" * n)                   # 2,000,000 is just under the 2 MiB size limit
    refused(["estimate", f], baseline_kb, "nested deeper than 64 levels")


def test_deep_block_nesting(tmp_path):
    f = tmp_path / "deep.yaml"
    f.write_text("".join("  " * i + "a:\n" for i in range(1000)) + "  " * 1000 + "1\n")
    refused_here(["estimate", f], "nested deeper than 64 levels")


def test_a_million_values_under_the_size_limit(tmp_path, baseline_kb):
    f = tmp_path / "many.yaml"
    f.write_text("[" + ",".join(["1"] * 1_000_000) + "]")      # 2 MB, a million scalars
    refused(["estimate", f], baseline_kb, "expands to more than 50000 values")


def test_fifty_megabyte_file_is_not_read(tmp_path, baseline_kb):
    f = tmp_path / "big.yaml"
    with open(f, "w") as fh:
        fh.write(GPT2)
        line = "# " + "x" * 1022 + "\n"
        for _ in range(50 * 1024):
            fh.write(line)
    assert f.stat().st_size > 50e6
    refused(["estimate", f], baseline_kb, "larger than the 2048 KiB limit")
    refused(["estimate", "gpt2", "-H", f], baseline_kb, "larger than the 2048 KiB limit")


@pytest.mark.parametrize("value,expect", [
    ("1.0e+400", "is not finite"),            # YAML 1.1 float that overflows to inf
    ("1e400", "'1e400' is not a whole number"),   # YAML 1.1: text (floats need a '.'); not an integer
    (".nan", "is not finite"),
    (".inf", "is not finite"),
    ("-.inf", "is not finite"),
    ("9" * 5000, "is too large"),             # past Python's 4300-digit int parsing limit
    ("1" + "0" * 40, "is too large (expected at most 1e30)"),
])
def test_huge_and_non_finite_numbers(tmp_path, value, expect):
    f = tmp_path / "m.yaml"
    f.write_text(GPT2.replace("d_model: 768", f"d_model: {value}"))
    line = GPT2.splitlines().index("d_model: 768") + 1
    refused_here(["estimate", f], f"{f}:{line}: d_model: ", expect)


@pytest.mark.parametrize("value", ["1e400", "-1e400", "1.0e+400", ".nan"])
def test_non_finite_float_fields(tmp_path, value):
    # a float field: pydantic reads the text '1e400' as inf and refuses it (allow_inf_nan=False)
    f = tmp_path / "m.yaml"
    f.write_text(GPT2.replace("dropout: 0.1", f"dropout: {value}"))
    line = GPT2.splitlines().index("dropout: 0.1") + 1
    refused_here(["estimate", f], f"{f}:{line}: dropout: ", "is not finite (expected a finite number)")
    hw = tmp_path / "hw.yaml"
    src = (ROOT / "hardware" / "a100-80gb.yaml").read_text()
    hw.write_text(re.sub(r"(?m)^tdp_watts: .*$", f"tdp_watts: {value}", src))
    refused_here(["estimate", "gpt2", "-H", hw], "tdp_watts: ", "is not finite")


@pytest.mark.parametrize("tag", [
    '!!python/object/apply:os.system ["touch {marker}"]',
    '!!python/object/new:os.system ["touch {marker}"]',
    '!!python/name:os.system',
    '!!python/object/apply:subprocess.check_call [["touch", "{marker}"]]',
    '!<tag:yaml.org,2002:python/object/apply:os.system> ["touch {marker}"]',
])
def test_python_tags_never_run(tmp_path, tag):
    marker = tmp_path / "PWNED"
    value = tag.replace("{marker}", str(marker))
    model = tmp_path / "m.yaml"
    model.write_text(GPT2.replace("name: gpt2", f"name: {value}"))
    refused_here(["estimate", model], "is not allowed (expected plain YAML")
    if tag.startswith("!!python/object/apply:os.system"):     # the other ways in, once
        whole = tmp_path / "whole.yaml"
        whole.write_text(value + "\n")
        refused_here(["estimate", whole], "is not allowed")
        refused_here(["estimate", "gpt2", "-H", whole], "is not allowed")
        refused_here(["estimate", "gpt2", "--set", f"model.name={value}"], "is not allowed")
    assert not marker.exists(), "a YAML tag ran a command"


def test_recursive_alias(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("a: &a [1, *a]\n")
    refused_here(["estimate", f], "refers to an unknown or enclosing anchor")


def test_binary_and_other_non_plain_tags(tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text(GPT2.replace("name: gpt2", "name: !!binary aGVsbG8="))
    refused_here(["estimate", f], "'!!binary' is not allowed")
    f.write_text(GPT2.replace("name: gpt2", "name: !!set {a, b}"))
    refused_here(["estimate", f], "'!!set' is not allowed")


def test_not_utf8_and_binary_garbage(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_bytes(bytes(range(256)) * 64)
    refused_here(["estimate", f], "not UTF-8")
    f.write_text("name: \x00\x01\x02\n")
    refused_here(["estimate", f], "invalid YAML")


def test_hostile_names_stay_one_short_line():
    refused_here(["estimate", "x" * 100_000], "unknown model 'xxx")
    refused_here(["estimate", "gpt2", "-H", "y" * 100_000], "unknown hardware 'yyy")
    refused_here(["estimate", "gpt2", "--set", "model." + "a." * 5000 + "b=1"], "no field")


def test_hostile_what_if_file(tmp_path):
    try:
        import costmodel.whatif  # noqa: F401
    except ImportError:
        pytest.skip("no what-if module yet")
    refused_here(["estimate", "-f", BAD / "billion_laughs.yaml"], "alias bomb")
    f = tmp_path / "deep.yaml"
    f.write_text("[" * 100_000)
    refused_here(["estimate", "-f", f], "nested deeper")


def test_hostile_config_json(tmp_path):
    try:
        import costmodel.hf  # noqa: F401
    except ImportError:
        pytest.skip("no config.json import yet")
    f = tmp_path / "config.json"
    f.write_text("[" * 100_000)
    refused_here(["estimate", f])
    f.write_text('{"model_type": "gpt2", "n_layer": 2, "n_embd": NaN, "n_head": 2, "vocab_size": 10}')
    refused_here(["estimate", f])
    f.write_text('{"model_type": "gpt2", "n_layer": 1e400, "n_embd": 8, "n_head": 2, "vocab_size": 10}')
    refused_here(["estimate", f])
