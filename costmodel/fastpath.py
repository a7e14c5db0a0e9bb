"""Batch-affine fast path of training estimates (sweeps of batch / micro-batch).

For a fixed model spec, sequence length, image size, precision, flash setting
and tensor-parallel degree, every quantity of every op -- forward / backward
FLOPs, matmul FLOPs, HBM bytes, saved-for-backward bytes, parameters and the
integer dims -- is an affine function ``a + c*b`` of the micro-batch size
``b`` (the builders multiply the batch into token / row / image counts only;
tests/test_properties.py checks linearity in batch). This module does not rely
on that claim, it verifies it per model:

* a ``Family`` builds the op tree at b = 1 and b = 2, derives every op's
  (a, c) (a small-denominator fraction where a builder divides, x / layers),
  and rebuilds for real at b = 3 and at its largest exact batch (at most
  4096), comparing every op field (type and value) and the tree's shape; any
  difference -- a non-affine quantity, an integer effect, a different tree --
  and the family is not used (the engine builds as before).
* Op values stay below 2^51 up to that largest exact batch, so the builders'
  float formulas were exact and ``a + c*b`` reproduces them bit for bit;
  beyond it the engine builds.
* A ``Plan`` (the families on one hardware spec) computes, for a new b, the
  per-op roofline in the engine's order -- max(compute, memory) per op is not
  affine, nor are calibrated efficiency / memory curves -- and the byte /
  FLOP sums of the training profile as affine functions while they are exact:
  sums of dyadic rationals whose magnitudes stay below 2^53 are exact in any
  order, so they equal the engine's float sums; past that each sum is added
  term by term in the engine's order. Before use the plan checks its profile,
  intensity and bound against the engine's own ``cost_ops`` /
  ``_train_profile`` / ``_model_profile`` at several batches (a mismatch --
  say the engine's arithmetic changed -- and it runs those functions on the
  affine ops instead).
* The backward pass's working set is a max over ops, not a sum: the plan keeps
  the per-op columns of ``engine._bwd_records`` as affine functions and the
  engine's own ``_bwd_scan`` runs on their values at b (``_bwd_at``).

Results are identical to a fresh build (tests/test_fastpath.py compares every
report value and op row). In a sweep (``r.cache``) a plan is made once a
(spec, hardware, shape) shows a second micro-batch; for ``estimate()``
without a cache, on its second call (a content-keyed, LRU-bounded memo). A
fast report makes its ops and tree only when they are read.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import fields as _dc_fields
from dataclasses import replace
from fractions import Fraction

from . import engine as E
from .build import build
from .ops import Op, Precision
from .tree import Node

NUM = ("fwd_flops", "bwd_flops", "matmul_flops", "bwd_matmul_flops", "fwd_bytes", "bwd_bytes", "params",
       "saved_bytes")
_FIELDS = tuple(f.name for f in _dc_fields(Op))
OP_LIMIT = 2 ** 51        # op values below this: the builders' float products were exact
EXACT = 2 ** 53           # float sums of multiples of 1/D below EXACT/D are exact
CHECKS = (3,)             # batches rebuilt for real to verify a family (plus the largest exact one)
TRIGGER = 2               # distinct micro-batches (calls, without a cache) seen before a plan is made
MEMO = 128                # per-plan results kept (LRU)
ENTRIES = 64              # (spec, hardware, shape) entries kept without a caller cache (LRU)
_SEGI = {s: i for i, s in enumerate(E._SEGS)}


# --- strict comparison ---------------------------------------------------------
def same(x, y) -> bool:
    """Equal in type and value, recursively (1 != 1.0 != True; -0.0 != 0.0)."""
    if type(x) is not type(y):
        return False
    if isinstance(x, float):
        return x == y and math.copysign(1.0, x) == math.copysign(1.0, y) or (x != x and y != y)
    if isinstance(x, dict):
        return x.keys() == y.keys() and list(x) == list(y) and all(same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return len(x) == len(y) and all(same(a, b) for a, b in zip(x, y))
    if isinstance(x, Op):
        return same_op(x, y)
    return x == y


def same_op(x: Op, y: Op) -> bool:
    """``same`` for two ops: equal fields (in order) of equal types, dims included."""
    dx, dy = x.__dict__, y.__dict__
    if dx != dy or list(dx) != list(dy):
        return False
    for v, w in zip(dx.values(), dy.values()):
        if type(v) is not type(w):
            return False
    d1, d2 = dx["dims"], dy["dims"]
    if list(d1) != list(d2):
        return False
    for v, w in zip(d1.values(), d2.values()):
        if type(v) is not type(w):
            return False
    return not dx["param_shapes"] or same(dx["param_shapes"], dy["param_shapes"])


def _skeleton(node: Node):
    return (node.name, node.level, node.count,
            tuple(_skeleton(c) if isinstance(c, Node) else c.name for c in node.children))


def _clone(node: Node, it) -> Node:
    return Node(node.name, node.level, [_clone(c, it) if isinstance(c, Node) else next(it) for c in node.children],
                node.count)


def _affine(v1, v2):
    """(a, c, d) with v(b) = (a + c*b) / d exactly for v(1) = v1, v(2) = v2 (d = 1: a + c*b, typed
    like v1), or None. Non-integers must be fractions with a small denominator (x / layers)."""
    t = type(v1)
    if t is not type(v2) or t not in (int, float) or (t is float and not (math.isfinite(v1) and math.isfinite(v2))):
        return None
    if t is int or (v1.is_integer() and v2.is_integer()):
        i1, i2 = int(v1), int(v2)
        return (t(2 * i1 - i2), t(i2 - i1), 1)
    r1, r2 = Fraction(v1), Fraction(v2)
    q1, q2 = r1.limit_denominator(4096), r2.limit_denominator(4096)
    if float(q1) != v1 or float(q2) != v2:
        return None
    d = q1.denominator * q2.denominator // math.gcd(q1.denominator, q2.denominator)
    c = (q2 - q1) * d
    a = q1 * d - c
    if a.denominator != 1 or c.denominator != 1:
        return None
    return int(a), int(c), d


def _blim(ma, mc, limit) -> float:
    """Largest b >= 0 with ma + mc*b < limit (math.inf when mc = 0 and ma < limit; -1: none)."""
    if ma >= limit:
        return -1
    if mc == 0:
        return math.inf
    return math.floor((Fraction(limit) - 1 - ma) / mc)


# --- family: one op tree as affine functions of the batch ------------------------
class Family:
    """The op tree of (spec, shape without batch, precision) as affine functions of the batch.
    ``ok`` is False when the tree is not affine in the batch (then nothing else is set)."""

    def __init__(self, spec, shape, p: Precision):
        self.spec, self.shape, self.p = spec, shape, p
        self.ok = False
        try:
            t1 = build(spec, replace(shape, batch=1), p)
            t2 = build(spec, replace(shape, batch=2), p)
        except (ValueError, ArithmeticError):
            return
        sk = _skeleton(t1)
        f1, f2 = E._flatten(t1), E._flatten(t2)
        if _skeleton(t2) != sk or [(x, m) for x, m, _ in f1] != [(x, m) for x, m, _ in f2]:
            return
        self.tree1, self.skeleton = t1, sk
        self.samples = {1: f1, 2: f2}   # the real ops at b = 1 and 2
        self.paths = [x for x, _, _ in f1]
        self.recs = []             # (path, m, template op, [(field, a, c, d)], [(dim, a, c)])
        self.aff = []              # per op: {field: (a, c, d)} for every NUM field
        self.integral = True       # every op value an integer (d = 1)
        ma = mc = 0                # largest |a|, |c| over op values
        for (path, m, o1), (_, _, o2) in zip(f1, f2):
            var, dvar, aff = [], [], {}
            d1, d2 = o1.__dict__, o2.__dict__
            if list(d1) != list(d2):
                return
            for f, v1 in d1.items():
                v2 = d2[f]
                if f in NUM:
                    if type(v1) is int and type(v2) is int:
                        a, c, d = got = (2 * v1 - v2, v2 - v1, 1)
                    else:
                        got = _affine(v1, v2)
                        if got is None:
                            return
                        a, c, d = got
                    aff[f] = got
                    if c:
                        var.append((f, a, c, d))
                    if d == 1:
                        a, c = abs(int(a)), abs(int(c))
                        if a > ma:
                            ma = a
                        if c > mc:
                            mc = c
                    else:
                        self.integral = False
                        ma, mc = max(ma, abs(Fraction(a, d))), max(mc, abs(Fraction(c, d)))
                elif f == "dims":
                    if list(v1) != list(v2):
                        return
                    for k, x in v1.items():
                        y = v2[k]
                        if type(x) is type(y) and (x == y if type(x) in (int, str, bool) else same(x, y)):
                            continue
                        if type(x) is not int or type(y) is not int:
                            return
                        dvar.append((k, 2 * x - y, y - x))
                elif type(v1) is not type(v2) or not (v1 == v2 if type(v1) in (str, bool) else same(v1, v2)):
                    return
            self.recs.append((path, m, o1, var, dvar))
            self.aff.append(aff)
        # every op value exact for b <= blim (abs(a) + abs(c) * b < OP_LIMIT bounds each one)
        self.blim = _blim(ma, mc, OP_LIMIT)
        if self.blim < 2:
            return
        for b in sorted({*CHECKS, min(self.blim, 4096)}):
            if b > self.blim:
                continue
            try:
                t = build(spec, replace(shape, batch=b), p)
            except (ValueError, ArithmeticError):
                return
            real = E._flatten(t)
            mine = self.ops_at(b)
            if _skeleton(t) != sk or len(real) != len(mine) or not all(
                    x == y and m == n and same_op(o, q) for (x, m, o), (y, n, q) in zip(real, mine)):
                return
        self.ok = True

    def ops_at(self, b: int) -> list:
        """``_flatten(build(spec, shape with batch b))``, from the affine model (b <= blim)."""
        out = []
        new = object.__new__
        for path, m, t, var, dvar in self.recs:
            o = new(Op)
            d = dict(t.__dict__)
            dims = d["dims"] = dict(t.dims)
            for k, a, c in dvar:
                dims[k] = a + c * b
            for f, a, c, q in var:
                d[f] = a + c * b if q == 1 else (a + c * b) / q
            o.__dict__ = d
            out.append((path, m, o))
        return out

    def tree_at(self, ops: list) -> Node:
        return _clone(self.tree1, (o for _, _, o in ops))


# --- plan: a family on one hardware spec ------------------------------------------
def _profile_terms(r, costs, full_ops, p, add, add_i):
    """The terms of ``engine._train_profile``'s byte sums and ``_model_profile``'s FLOP sums,
    in the engine's order, as ``add(key, n, g, k)`` for a term ``n * (g / k)`` (g exact: an op
    value or a difference of them); ``_intensity``'s as ``add_i(key, count, x, y)`` for
    ``count * (x + y)``. Returns the block keys in order."""
    spec, tp, flash = r.spec, r.wl.tp, r.wl.flash
    blocks = {}
    for c, s in zip(costs, E._segments([c.path for c in costs])):
        o, n = c.op, c.count
        k = E._vocab_split(o, spec, tp) if o.kind == "cross_entropy" else 1
        g = o.saved_bytes
        rep = E._replicated(c)
        qd = E._quad_saved(o, p.act_bytes)
        if E._in_block(c.path):
            key = c.path.rsplit("/", 1)[0]
            if key not in blocks:
                blocks[key] = (n, s, E._block_input(o, p))
            add(("b0", key), 1, g, k)
            if rep:
                add(("b1", key), 1, g, k)
            add(("b2", key), 1, qd, 1)
            add(("bk_saved", s), n, g, k)
            if rep:
                add(("bk_repl", s), n, g, k)
            add(("bk_quad", s), n, qd, 1)
        else:
            add(("saved", s), n, g, k)
            if rep:
                add(("repl", s), n, g, k)
            add(("quad", s), n, qd, 1)
    for key, (n, s, inp) in blocks.items():
        add(("bk_inputs", s), n, inp, 1)
        add(("inp", key), 1, inp, 1)
    for path, m, o in full_ops:
        add(("F", "fwd"), m, o.fwd_flops, 1)
        add(("F", "bwd"), m, o.bwd_flops, 1)
        add(("F", "mm"), m, o.matmul_flops, 1)
        add(("F", "bmm"), m, o.bwd_matmul_flops, 1)
        if o.kind == "flash_attention":
            add(("F", "flash_mm"), m, o.matmul_flops, 1)
        if E._in_block(path):
            add(("F", "rec_full"), m, o.fwd_flops, 1)
            add(("F", "rec_full_mm"), m, o.matmul_flops, 1)
        if o.quadratic and not flash:
            add(("F", "rec_sel"), m, o.fwd_flops, 1)
            add(("F", "rec_sel_mm"), m, o.matmul_flops, 1)
    for c in costs:
        o = c.op
        add_i(("I", "f"), c.count, o.fwd_flops, o.bwd_flops)
        add_i(("I", "b"), c.count, o.fwd_bytes, o.bwd_bytes)
    return list(blocks)


_PBYTES = ("saved", "repl", "quad", "bk_saved", "bk_repl", "bk_quad", "bk_inputs")
_FKEYS = ("fwd", "bwd", "mm", "bmm", "flash_mm", "rec_full", "rec_full_mm", "rec_sel", "rec_sel_mm")


def _ordered(terms, b: int):
    """An engine sum past its exact range: ``acc += n * (g / k)`` term by term, in order
    (g = (a + c*b) / d: float a, c and d = 1.0, or ints and one correctly rounded division)."""
    acc = 0.0
    for n, a, c, d, k in terms:
        acc += n * ((a + c * b) / d / k)
    return acc


def _ordered_i(terms, b):
    """``_intensity``'s ``sum(count * (x + y))`` with the ops' own int / float types."""
    return sum([n * ((xa + xc * b) + (ya + yc * b)) for n, xa, xc, ya, yc in terms])


class Plan:
    """A device family (heads / d_ff split by tp) and the model family (tp = 1) on one
    hardware spec: training profiles for any micro-batch ``b <= blim``."""

    def __init__(self, r, p: Precision, dev: Family, full: Family):
        self.spec, self.hw, self.p, self.dev, self.full = r.spec, r.hw, p, dev, full
        self.tp, self.flash = r.wl.tp, r.wl.flash
        self.blim = min(dev.blim, full.blim)       # ops exact: materialize + the engine's functions
        self.fast_ok = False                       # else the fast evaluation (self._fast)
        self.blim1 = -1                            # ... with every sum affine up to here
        self.memo: OrderedDict = OrderedDict()
        hw = r.hw
        got = {}
        for b in (1, 2):
            ops = dev.samples[b]
            got[b] = (ops, E.cost_ops(None, hw, p, ops), full.samples[b])
        P1 = E._train_profile(r, got[1][1], p)
        F1 = E._model_profile(got[1][2], self.flash)
        self.P_const = {k: P1[k] for k in ("params", "max_unit_params", "tied_params", "max_tensor")}
        self.F_params, self.F_ops, self.F_opt = F1["params"], F1["ops"], {}
        if not self._compile_loop(r, p) or not self._compile_sums(r, p, got) or not self._compile_bwd(r, p, got):
            return
        # verify against the engine: b = 1, 2, the largest batch whose sums are all affine, the
        # next one, and the largest exact batch (the family checked the ops themselves at b = 3)
        for b in sorted({1, 2, min(self.blim1, 4096), min(self.blim1 + 1, 4096), min(self.blim, 4096)}):
            if not 1 <= b <= self.blim:
                continue
            if b in got:
                ops, costs, fops = got[b]
            else:
                ops = dev.ops_at(b)
                costs = E.cost_ops(None, hw, p, ops)
                fops = ops if full is dev else full.ops_at(b)
            want_P = P1 if b == 1 else E._train_profile(r, costs, p)
            want_F = F1 if b == 1 else E._model_profile(fops, self.flash)
            want_ib = (E._intensity(costs), E._bound(costs))
            P, F, ib = self._fast(b)
            if not (same(P, want_P) and same(ib, want_ib)
                    and same({k: v for k, v in F.items() if k not in ("ops", "opt")},
                             {k: v for k, v in want_F.items() if k not in ("ops", "opt")})):
                return
        self.fast_ok = True

    def _compile_sums(self, r, p, got) -> bool:
        """Each sum of the profile as (a, c, blim, terms): a + c*b (floats) while b <= blim --
        a sum of multiples of 1/D (D a power of two) whose magnitudes stay below 2^53/D, exact
        in any order --, else its terms in the engine's order."""
        terms: dict = {}
        keys = None
        for b in (1, 2):
            ops, costs, fops = got[b]

            def add(key, n, g, k, _b=b):
                t = terms.get(key)
                if t is None:
                    t = terms[key] = ([], [], False)
                t[_b - 1].append((n, g, k))

            def add_i(key, n, x, y, _b=b):
                t = terms.get(key)
                if t is None:
                    t = terms[key] = ([], [], True)
                t[_b - 1].append((n, x, y))
            k = _profile_terms(r, costs, fops, p, add, add_i)
            if keys is not None and k != keys:
                return False
            keys = k
        acc = {}
        for key, (t1, t2, is_i) in terms.items():
            if len(t1) != len(t2):
                return False
            A = C = Ma = Mc = 0
            D = 1
            ordered = []
            exact = True
            for (n, x1, y1), (n2, x2, y2) in zip(t1, t2):
                if n != n2 or (not is_i and y1 != y2):
                    return False
                if is_i:        # count * (x + y), x and y op values of the same types at every b
                    fx, fy = _affine(x1, x2), _affine(y1, y2)
                    if fx is None or fy is None or fx[2] != 1 or fy[2] != 1:
                        return False
                    ordered.append((n, fx[0], fx[1], fy[0], fy[1]))
                    a, c = n * (int(fx[0]) + int(fy[0])), n * (int(fx[1]) + int(fy[1]))
                else:           # n * (g / k)
                    if type(x1) is int and type(x2) is int:
                        ga, gc, gd = 2 * x1 - x2, x2 - x1, 1
                    elif type(x1) is float and type(x2) is float and x1.is_integer() and x2.is_integer():
                        x1, x2 = int(x1), int(x2)
                        ga, gc, gd = 2 * x1 - x2, x2 - x1, 1
                    else:
                        f = _affine(x1, x2)
                        if f is None:
                            return False
                        ga, gc, gd = f
                    k = y1
                    if gd == 1:
                        ordered.append((float(n), float(ga), float(gc), 1.0, float(k)))
                    else:       # g itself rounded (x / layers): exact int arithmetic, one rounding
                        ordered.append((float(n), int(ga), int(gc), gd, float(k)))
                        exact = False
                    if k & (k - 1):
                        exact = False   # not dyadic: g / k rounds
                    a, c = n * int(ga), n * int(gc)
                    if k != 1 and (a % k or c % k):
                        a, c = Fraction(a, k), Fraction(c, k)
                        D = math.lcm(D, a.denominator, c.denominator)
                    elif k != 1:
                        a, c = a // k, c // k
                A, C, Ma, Mc = A + a, C + c, Ma + abs(a), Mc + abs(c)
            lim = _blim(Ma * D, Mc * D, EXACT) if exact else -1
            if lim < 1:
                A = C = 0                          # never evaluated as a + c*b
            acc[key] = (float(A), float(C), lim, tuple(ordered), is_i)
        empty = (0.0, 0.0, math.inf, (), False)
        flat = [acc.get((k, s), empty) for k in _PBYTES for s in E._SEGS]
        flat += [acc.get((w, k), empty) for k in keys for w in ("b0", "b1", "b2")]
        flat += [acc.get(("F", k), empty) for k in _FKEYS]
        flat += [acc.get(("I", "f"), empty), acc.get(("I", "b"), empty)]
        self.flat = flat
        self.flat_ac = [(a, c) for a, c, _, _, _ in flat]
        self.blocks = keys
        self.layer = next((i for i, k in enumerate(keys) if k.endswith("/layer")), None)
        # the layer's input bytes keep _block_input's type (int from the dims, or 0.0)
        self.inp = {}
        if self.layer is not None:
            (x1,), (x2,) = ([g for _, g, _ in t] for t in terms[("inp", keys[self.layer])][:2])
            f = _affine(x1, x2)
            if f is None or f[2] != 1:
                return False
            self.inp = f[:2]
        self.blim1 = min(self.blim, *(x[2] for x in flat))
        return True

    def _compile_bwd(self, r, p, got) -> bool:
        """``engine._bwd_records`` as affine functions of the batch: its columns (saved,
        seq x seq, block-input and gradient bytes of each op) per op, the rest the same
        at every b; the engine's ``_bwd_scan`` then runs on the columns of any b."""
        (s1, c1, t1), (s2, c2, t2) = (E._bwd_records(r, got[b][1], p) for b in (1, 2))
        if not same(s1, s2) or not same(t1, t2):
            return False
        cols = []
        for x, y in zip(c1, c2):
            col = []
            for v1, v2 in zip(x, y):
                f = _affine(v1, v2)
                if f is None:
                    return False
                col.append(f)
            if all(c == 0 and d == 1 for _, c, d in col):      # the same at every b: the engine's own values
                cols.append((None, list(x), col))
            else:
                cols.append((all(d == 1 for _, _, d in col), [(a, c) for a, c, _ in col], col))
        self.bwd_static, self.bwd_cols, self.bwd_table = s1, cols, t1
        return True

    def _bwd_at(self, b: int) -> tuple:
        """``engine._bwd_records``' columns at batch b (the values ``Family.ops_at`` gives the ops)."""
        return tuple(ac if plain is None else [a + c * b for a, c in ac] if plain else
                     [a + c * b if d == 1 else (a + c * b) / d for a, c, d in col]
                     for plain, ac, col in self.bwd_cols)

    def _compile_loop(self, r, p) -> bool:
        """Per-op records of the roofline loop (cost_ops and the time sums of
        _train_profile), grouped into runs of one pipeline segment."""
        hw, dev = r.hw, self.dev
        cal = hw.calibration
        self.bw = bw = hw.memory.bandwidth
        self.mem_rate = bw * E.memory_efficiency(hw)
        self.over = cal.launch_overhead_s if cal else 0.0
        curves = cal.curves if cal is not None else {}
        mcurves = (getattr(cal, "memory_curves", None) or {}) if cal is not None else {}
        self.curves = bool(curves)
        rates = {}
        spec, tp, flash = r.spec, self.tp, self.flash
        runs = []               # (segment index, [record]); record: see _times
        for (path, n, o, _, _), aff, s in zip(dev.recs, dev.aff, E._segments(dev.paths)):
            vals = [aff[f] for f in ("fwd_flops", "fwd_bytes", "bwd_flops", "bwd_bytes")]
            if any(d != 1 for _, _, d in vals):
                return False
            if all(a == 0 and c == 0 for a, c, _ in vals[:3]):
                continue                           # never any time (cost_ops: 0 s, bound '-')
            cls = o.op_class
            if cls not in rates:
                peak = E.op_peak(hw, p, cls)
                rates[cls] = (peak, None if cls in curves else peak * getattr(hw.efficiency, cls))
            peak, flat = rates[cls]
            # floats throughout: the values are integers below 2^51, so int -> float is exact and
            # every product / quotient below rounds exactly as the engine's (mixed-type) one
            rec = (float(n), float(E._vocab_split(o, spec, tp)), E._in_block(path), o.quadratic and not flash,
                   flat if flat is not None else cls, mcurves.get(cls),
                   *(float(x) for a, c, _ in vals for x in (a, c)))
            si = _SEGI[s]
            if not runs or runs[-1][0] != si:
                runs.append((si, []))
            runs[-1][1].append(rec)
        self.runs = [(si, tuple(recs)) for si, recs in runs]
        self.peaks = {cls: peak for cls, (peak, _) in rates.items()}
        # the plain loop (see _times): records without the memory curve
        self.plain = (self.over == 0.0 and not curves and not mcurves and self.mem_rate > 0
                      and all(type(rec[4]) is float and rec[4] > 0 and any(
                          (a + c > 0 and c >= 0) for a, c in (rec[6:8], rec[8:10], rec[10:12]))
                          for _, recs in runs for rec in recs))
        self.runs_plain = [(si, tuple(rec[:5] + rec[6:] for rec in recs)) for si, recs in self.runs]
        return True

    # -- evaluation ----------------------------------------------------------------
    def _times(self, b: float):
        """cost_ops' roofline of every op at batch b and _train_profile's time sums, in the
        engine's order: (fwd, bwd, rec_full, rec_sel) by segment, and the per-op step times of
        compute- and memory-bound ops (for _bound)."""
        fwd, bwd, rf, rs = [0.0] * 4, [0.0] * 4, [0.0] * 4, [0.0] * 4
        tcl, tml = [], []
        tca, tma = tcl.append, tml.append
        mr, over = self.mem_rate, self.over
        if self.plain:
            # no launch overhead, no calibrated curves, positive rates, and no op whose FLOPs and
            # bytes can all be 0: ``x / rate if x else 0.0`` is ``x / rate`` (0.0 / rate = 0.0),
            # ``+ 0.0`` changes nothing, and no op is skipped
            for si, recs in self.runs_plain:
                sf, sb, sr, ss = fwd[si], bwd[si], rf[si], rs[si]
                for n, k, inb, qsel, cf, fa, fc, fba, fbc, ba, bc, bba, bbc in recs:
                    tc = (fa + fc * b) / cf
                    tm = (fba + fbc * b) / mr
                    cpt = tc >= tm
                    tf = tc if cpt else tm
                    tc = (ba + bc * b) / cf
                    tm = (bba + bbc * b) / mr
                    tb = tc if tc >= tm else tm
                    (tca if cpt else tma)(n * (tf + tb))
                    x = n * tf / k          # exact when k == 1.0
                    sf += x
                    sb += n * tb / k
                    if inb:
                        sr += x
                    if qsel:
                        ss += n * tf
                fwd[si], bwd[si], rf[si], rs[si] = sf, sb, sr, ss
            return fwd, bwd, rf, rs, tcl, tml
        curves = self.curves
        if curves:
            hw, eff, peaks = self.hw, E.efficiency, self.peaks
        bw = self.bw
        for si, recs in self.runs:
            sf, sb, sr, ss = fwd[si], bwd[si], rf[si], rs[si]
            for n, k, inb, qsel, cf, mc, fa, fc, fba, fbc, ba, bc, bba, bbc in recs:
                ff = fa + fc * b
                fb = fba + fbc * b
                bf = ba + bc * b
                if ff == 0 and fb == 0 and bf == 0:
                    continue
                bb = bba + bbc * b
                if curves and type(cf) is str:
                    peak = peaks[cf]
                    cf, cb = ((peak * eff(hw, cf, ff)) if ff else 0.0), ((peak * eff(hw, cf, bf)) if bf else 0.0)
                else:
                    cb = cf
                tc = ff / cf if ff else 0.0
                if mc is None:
                    tm = fb / mr if fb else 0.0
                else:
                    tm = fb / (bw * mc.efficiency(fb)) if fb else 0.0
                cpt = tc >= tm
                tf = (tc if cpt else tm) + over
                tc = bf / cb if bf else 0.0
                if mc is None:
                    tm = bb / mr if bb else 0.0
                else:
                    tm = bb / (bw * mc.efficiency(bb)) if bb else 0.0
                tb = (tc if tc >= tm else tm) + (over if bf or bb else 0.0)
                (tca if cpt else tma)(n * (tf + tb))
                x = n * tf / k
                sf += x
                sb += n * tb / k
                if inb:
                    sr += x
                if qsel:
                    ss += n * tf
            fwd[si], bwd[si], rf[si], rs[si] = sf, sb, sr, ss
        return fwd, bwd, rf, rs, tcl, tml

    def _fast(self, b: int):
        """(P, F, (intensity, bound)) without building: the per-op roofline in the engine's
        order (cost_ops, _train_profile, _bound), the sums as affine functions (or in order)."""
        bi = b
        b = float(b)
        fwd, bwd, rf, rs, tcl, tml = self._times(b)
        if bi <= self.blim1:
            v = [a + c * b for a, c in self.flat_ac]
        else:
            v = [a + c * b if bi <= lim else (_ordered_i if is_i else _ordered)(t, bi)
                 for a, c, lim, t, is_i in self.flat]
        # (dict literals: the engine's key order, pre / layer / mid / post)
        P = {"fwd": {"pre": fwd[0], "layer": fwd[1], "mid": fwd[2], "post": fwd[3]},
             "bwd": {"pre": bwd[0], "layer": bwd[1], "mid": bwd[2], "post": bwd[3]},
             "params": self.P_const["params"].copy()}
        for i, key in enumerate(_PBYTES):
            i *= 4
            P[key] = {"pre": v[i], "layer": v[i + 1], "mid": v[i + 2], "post": v[i + 3]}
        P["rec_full"] = {"pre": rf[0], "layer": rf[1], "mid": rf[2], "post": rf[3]}
        P["rec_sel"] = {"pre": rs[0], "layer": rs[1], "mid": rs[2], "post": rs[3]}
        i = 4 * len(_PBYTES)
        nb = len(self.blocks)
        if nb:
            b0, b1 = v[i:i + 3 * nb:3], v[i + 1:i + 3 * nb:3]
            f = 1 - 1 / self.tp
            P["working"] = max(b0)
            P["working_sp"] = max([x0 - x1 * f for x0, x1 in zip(b0, b1)])
        else:
            P["working"] = P["working_sp"] = 0.0
        li = self.layer
        if li is None:
            P["layer_one"] = None
        else:
            a, c = self.inp
            j = i + 3 * li
            P["layer_one"] = (v[j], v[j + 1], v[j + 2], a + c * bi)
        i += 3 * nb
        P["max_unit_params"] = self.P_const["max_unit_params"]
        P["tied_params"] = self.P_const["tied_params"]
        P["max_tensor"] = self.P_const["max_tensor"].copy()
        P["bwd_static"], P["bwd_cols"], P["bwd_table"] = self.bwd_static, self._bwd_at(bi), self.bwd_table
        P["bwd_tp"], P["bwd_memo"] = self.tp, {}
        F = {"fwd": v[i], "bwd": v[i + 1], "mm": v[i + 2], "bmm": v[i + 3], "flash_mm": v[i + 4],
             "rec_full": v[i + 5], "rec_full_mm": v[i + 6], "rec_sel": v[i + 7], "rec_sel_mm": v[i + 8],
             "params": self.F_params,
             "ops": self.F_ops,           # parameter shapes only (_opt_total): the same at every batch
             "opt": self.F_opt}
        fi, bs = v[i + 9], v[i + 10]
        ib = (fi / bs if bs else 0.0, "compute" if sum(tcl) >= sum(tml) else "memory")
        return P, F, ib

    def profiles(self, r, b: int, share: bool):
        """(P, F, (intensity, bound), load) for micro-batch b of ``r`` (same spec content, hardware
        and shape), or None past the exact range. ``load()`` -> (op costs, device tree);
        ``share``: one load per b for every caller (a sweep's cache), else a fresh one per call."""
        got = self.memo.get(b)
        if got is not None:
            self.memo.move_to_end(b)
        else:
            if b > self.blim:
                return None
            if self.fast_ok:
                P, F, ib = self._fast(b)
                got = (P, F, ib, _Load(self, b))
            else:       # ops still exact: the engine's own functions on them
                ops = self.dev.ops_at(b)
                costs = E.cost_ops(None, self.hw, self.p, ops)
                fops = ops if self.full is self.dev else self.full.ops_at(b)
                P = E._train_profile(r, costs, self.p)
                F = E._model_profile(fops, self.flash)
                F["opt"] = self.F_opt            # optimizer-state memo: parameters only
                got = (P, F, (E._intensity(costs), E._bound(costs)), _Load(self, b, ops, costs))
            self.memo[b] = got
            if len(self.memo) > MEMO:
                self.memo.popitem(last=False)
        P, F, ib, load = got
        return P, F, ib, (load if share else _Load(self, b))


class _Load:
    """Op costs and device tree of one micro-batch, made on first use."""
    __slots__ = ("plan", "b", "ops", "costs", "got")

    def __init__(self, plan: Plan, b: int, ops=None, costs=None):
        self.plan, self.b, self.ops, self.costs, self.got = plan, b, ops, costs, None

    def __call__(self):
        if self.got is None:
            pl = self.plan
            ops = self.ops if self.ops is not None else pl.dev.ops_at(self.b)
            costs = self.costs if self.costs is not None else E.cost_ops(None, pl.hw, pl.p, ops)
            self.got = (costs, pl.dev.tree_at(ops))
            self.ops = self.costs = None
        return self.got


# --- entry point --------------------------------------------------------------------
class _Entry:
    """One (spec, hardware, shape without batch): micro-batches seen, then its plan (False: none)."""
    __slots__ = ("spec", "hw", "seen", "plan")

    def __init__(self, spec, hw):
        self.spec, self.hw, self.seen, self.plan = spec, hw, set(), None


_entries: OrderedDict = OrderedDict()       # without a caller cache: keyed by content
_families: OrderedDict = OrderedDict()
_lock = threading.RLock()                   # guards the module-level memos (estimate() from threads)


def _family(store, key, spec, shape, p, strict: bool) -> Family | None:
    got = store.get(key)
    if got is None or (strict and got[0] is not spec):
        fam = Family(spec, shape, p)
        got = store[key] = (spec, fam if fam.ok else False)
        if store is _families:
            while len(store) > ENTRIES // 2:
                store.popitem(last=False)
    return got[1] or None


def train_fast(r):
    """(P, F, (intensity, bound), load) for r's micro-batch, or None: build as before.
    With ``r.cache`` (a sweep) entries are keyed by object identity, as the engine's
    own memo; without, by the specs' content (a module-level LRU)."""
    if r.cache is None:
        with _lock:
            return _train_fast(r)
    return _train_fast(r)


def _train_fast(r):
    spec, hw, wl = r.spec, r.hw, r.wl
    shape_key = (r.seq, r.target_seq, r.image, wl.flash, wl.tp, r.precision)
    c = r.cache
    if c is not None:
        store = c
        key = ("fastpath", id(spec), id(hw), shape_key)
    else:
        store = _entries
        sk = type(spec).__name__ + spec.model_dump_json()
        key = (sk, hw.model_dump_json(), shape_key)
    e = store.get(key)
    if e is None or (c is not None and (e.spec is not spec or e.hw is not hw)):
        e = store[key] = _Entry(spec, hw)
        if c is None:
            while len(store) > ENTRIES:
                store.popitem(last=False)
    elif c is None:
        store.move_to_end(key)
    plan = e.plan
    b = r.micro_batch
    if plan is None:
        # a sweep's cache already keeps each shape's tree: wait for a second micro-batch; without
        # one every call builds, so the second call of the same shape makes the plan
        e.seen.add(b if c is not None else len(e.seen))
        if len(e.seen) < TRIGGER:
            return None
        p = Precision.of(r.precision)
        shape = E._shape(r, 1, training=True, tp=wl.tp)
        full_shape = replace(shape, tp=1)
        if c is not None:
            fstore, fkeys = c, (("fastfam", id(spec), shape, p), ("fastfam", id(spec), full_shape, p))
        else:
            fstore, fkeys = _families, ((sk, shape, p), (sk, full_shape, p))
        dev = _family(fstore, fkeys[0], spec, shape, p, c is not None)
        full = dev if wl.tp == 1 else _family(fstore, fkeys[1], spec, full_shape, p, c is not None)
        plan = e.plan = Plan(r, p, dev, full) if dev is not None and full is not None else False
        e.seen = None
    if plan is False:
        return None
    return plan.profiles(r, b, share=c is not None)
