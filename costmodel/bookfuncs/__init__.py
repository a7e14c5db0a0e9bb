"""Extra closed-form formulas used by book catalogue expressions.

Each module defines functions and a ``FUNCTIONS`` dict {name: fn}; every
function is a general formula with its source in the docstring (a paper,
the book's section, or a datasheet), built on the op library where one
applies. book.py merges them into its expression namespace.
"""
