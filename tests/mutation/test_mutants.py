"""The mutant generator: exactly which mutants a source yields, what it leaves alone, and that the
mutants of the consensus core compile, differ from the original and keep their ids."""

from __future__ import annotations

import ast
from pathlib import Path
from textwrap import dedent

import pytest

from tests.mutation.mutants import Mutant, generate, mutants

ROOT = Path(__file__).resolve().parents[2]

Change = tuple[str, int, str, str]


def changes(source: str) -> set[Change]:
    return {(str(m.operator), m.line, m.original, m.replacement) for m in mutants("t.py", dedent(source))}


def test_operators_on_conditions_and_arithmetic() -> None:
    source = """\
        def f(a, b, items):
            if a < b and not items:
                a += 1
            total = a * b - 2
            return total if a in items else -1
        """
    assert changes(source) == {
        ("BOOL", 2, "a < b and not items", "(a < b or not items)"),
        ("NEG-IF", 2, "a < b and not items", "not (a < b and (not items))"),
        ("ROR", 2, "a < b", "a <= b"),
        ("ROR", 2, "a < b", "a >= b"),
        ("NOT", 2, "not items", "items"),
        ("AUG", 3, "a += 1", "a -= 1"),
        ("DEL", 3, "a += 1", "pass"),
        ("CONST", 3, "1", "0"),
        ("DEL", 4, "total = a * b - 2", "pass"),
        ("AOR", 4, "a * b - 2", "a * b + 2"),
        ("AOR", 4, "a * b", "a // b"),
        ("CONST", 4, "2", "3"),
        ("DEL", 5, "return total if a in items else -1", "return None"),
        ("ROR", 5, "a in items", "a not in items"),  # no NEG-IF: the same mutant as this one
        ("CONST", 5, "-1", "0"),
    }


def test_operators_on_loops_identity_and_division() -> None:
    source = """\
        def g(x, y):
            while x is not None:
                x = x // 2 % y
                x -= y
            return x == True
        """
    assert changes(source) == {
        ("ROR", 2, "x is not None", "x is None"),
        ("DEL", 3, "x = x // 2 % y", "pass"),
        ("AOR", 3, "x // 2 % y", "x // 2 // y"),
        ("AOR", 3, "x // 2", "x * 2"),
        ("CONST", 3, "2", "3"),
        ("AUG", 4, "x -= y", "x += y"),
        ("DEL", 4, "x -= y", "pass"),
        ("DEL", 5, "return x == True", "return None"),
        ("ROR", 5, "x == True", "x != True"),
        ("CONST", 5, "True", "False"),
    }


def test_constants() -> None:
    source = """\
        def c():
            return [0, 1, -1, 5, -5, True, False, 0.5, -0.5, "s", b"b", None, ...]
        """
    consts = {(m[2], m[3]) for m in changes(source) if m[0] == "CONST"}
    assert consts == {
        ("0", "1"),
        ("1", "0"),
        ("-1", "0"),
        ("5", "6"),
        ("-5", "-4"),
        ("True", "False"),
        ("False", "True"),
    }


def test_what_is_never_mutated() -> None:
    source = '''\
        """Module docstring: 1 < 2."""
        from __future__ import annotations

        import logging
        from typing import TYPE_CHECKING, Annotated

        if TYPE_CHECKING:
            LIMIT = 1 + 2

        log = logging.getLogger("x" + "y")
        NAME: Annotated[int, 5] = "a" + "b"
        GREETING = f"{1 + 2}" % ()


        class C:
            """Class docstring: 3 > 2."""

            size: Annotated[int, 7]

            def __repr__(self) -> str:
                return f"C({1 + 1})" if True else ""

            def __str__(self) -> str:
                x = 1
                return str(x)

            def m(self, n: Annotated[int, 5], *, k: Annotated[int, 6]) -> Annotated[int, 8]:
                """Method docstring: 4 == 4."""
                ...
                log.warning("n is %d", n + 1 if n > 0 else -n)
                logging.getLogger(__name__).info("n", n - 1)
                assert n > 0 and not k, f"bad {n + 1}"
                assert_never(n - 1)
                x: Annotated[int, 9]
                y = n + 1  # pragma: no mutate
                raise ValueError(f"bad {n + 1}", n - 1, 2 == k) from None
        '''
    assert mutants("t.py", dedent(source)) == []


def test_the_guard_of_a_raise_is_mutated_not_its_message() -> None:
    source = """\
        def h(n):
            if n < 0:
                raise ValueError(f"negative: {n - 1}", n + 1)
        """
    assert changes(source) == {
        ("ROR", 2, "n < 0", "n <= 0"),
        ("ROR", 2, "n < 0", "n >= 0"),
        ("NEG-IF", 2, "n < 0", "not (n < 0)"),
        ("CONST", 2, "0", "1"),
    }


def test_a_pragma_exempts_a_compound_statements_header_not_its_body() -> None:
    source = """\
        def k(a):
            if a > 1:  # pragma: no mutate
                a = 2
            b = (a +
                 3)  # pragma: no mutate
            return [a, b]  # pragma: no mutate
        """
    assert changes(source) == {
        ("DEL", 3, "a = 2", "pass"),
        ("CONST", 3, "2", "3"),
        ("DEL", 4, "b = (a +\n         3)", "pass"),
        ("AOR", 4, "a +\n         3", "a - 3"),
    }


def test_returns_and_deletions() -> None:
    source = """\
        X = f()


        class K:
            Y = g()

            def bare(self) -> None:
                return

            def none(self, x):
                return None

            def annotated_none(self, x) -> None:
                self.z = h()
                return x

            def value(self, x) -> int:
                return x
        """
    assert changes(source) == {
        ("DEL", 14, "self.z = h()", "pass"),
        ("DEL", 18, "return x", "return None"),
    }


def test_replacements_keep_the_meaning_of_the_context() -> None:
    source = """\
        def p(a, b, c):
            return c and not (a or b), c * -(a + b), a or b and c
        """
    expected = {
        "NOT": "return c and (a or b), c * -(a + b), a or b and c",
        "AOR": "return c and not (a or b), c * (a + b), a or b and c",
    }
    originals = {"NOT": "not (a or b)", "AOR": "-(a + b)"}
    found = {
        str(m.operator): m for m in mutants("t.py", dedent(source)) if originals.get(m.operator) == m.original
    }
    assert found.keys() == expected.keys()
    for operator, statement in expected.items():
        assert ast.dump(ast.parse(found[operator].source())) == ast.dump(
            ast.parse(f"def p(a, b, c):\n    {statement}\n")
        )
    inner_bool = [m for m in mutants("t.py", dedent(source)) if m.original == "b and c"]
    assert [m.replacement for m in inner_bool] == ["(b or c)"]


def test_positions_count_characters_not_bytes() -> None:
    source = 'def u(a, b):\n    return ("héllo wörld ✓", a < b)\n'
    (ror, _) = (m for m in mutants("t.py", source) if m.operator == "ROR")
    assert ror.original == "a < b"
    assert ror.source() == 'def u(a, b):\n    return ("héllo wörld ✓", a <= b)\n'


def test_a_mutant_that_does_not_compile_is_dropped_and_counted() -> None:
    source = """\
        def outer():
            n = 0
            def inner():
                nonlocal n
                n = 1
            return inner
        """
    generated = generate("t.py", dedent(source))
    assert generated.dropped == 1  # without `n = 0`, `nonlocal n` has no binding
    assert {(m.line, m.replacement) for m in generated.mutants} == {
        (2, "1"),
        (5, "pass"),
        (5, "0"),
        (6, "return None"),
    }


def test_ids_number_the_mutants_of_each_line() -> None:
    found = mutants("consensus/x.py", "def f(a):\n    return a < 1\n")
    assert [m.id for m in found] == ["x.py:2:1", "x.py:2:2", "x.py:2:3", "x.py:2:4"]
    assert all(m.path == "consensus/x.py" and m.line == 2 for m in found)


@pytest.mark.parametrize("path", ["consensus/rules.py", "consensus/machine.py"])
def test_consensus_mutants_compile_differ_and_keep_their_ids(path: str) -> None:
    source = (ROOT / path).read_text(encoding="utf-8")
    generated = generate(path, source)
    assert generated.mutants and generated.dropped == 0
    assert mutants(path, source) == list(generated.mutants)  # the same ids, in the same order
    assert len({m.id for m in generated.mutants}) == len(generated.mutants)
    for mutant in generated.mutants:
        assert source[mutant.start : mutant.end] == mutant.original != mutant.replacement
        assert mutant.source() != source
    # Compiling the whole file is the slow part (10 ms for machine.py): the generator compiles the
    # changed function alone. Here whole files: all of a small one, a spread of a large one.
    sample: list[Mutant] = list(generated.mutants[:: max(1, len(generated.mutants) // 60)])
    for mutant in sample:
        compile(mutant.source(), path, "exec", dont_inherit=True)
