"""The mutants of one Python source file, generated without running anything.

A mutant changes exactly one place: the source segment of one `ast` node is replaced by the
`ast.unparse` of the mutated node, in parentheses when it binds less tightly than the original.
A mutant whose file no longer compiles, or reads as before, is dropped and counted (to keep
this fast, what is compiled is the outermost function, or else the top-level statement, around
the change: the rest of the file is the same, and no scope outside that one can break).

Operators:
    ROR     one operator of a comparison (chain): < to <= and >=, <= to < and >, > to >= and <=,
            >= to > and <; == and !=, is and is not, in and not in swapped
    BOOL    a whole `and` to `or`, and back
    NOT     `not x` to `x`
    AOR     binary + and - swapped, * to //, // to *, % to //, unless an operand is a string
            literal; `-x` to `x`
    AUG     += and -= swapped
    CONST   int literals, a negative one (`-n`) being one literal: 0 to 1, 1 and -1 to 0, any other
            n to n + 1; True and False swapped
    NEG-IF  the test `c` of if, elif, while and `x if c else y` to `not (c)`; not when `c` is
            `not x` or a single ==, !=, is, is not, in or not in (NOT and ROR make that mutant)
    DEL     inside a function: an expression statement, assignment with a value, augmented
            assignment or `del` to `pass`; `return v` to `return None`, unless v is None or the
            function is annotated `-> None`

Never mutated: constants other than int and bool (strings, bytes, f-strings and docstrings, floats,
None); annotations; decorators (`@dataclass(frozen=True)`'s flags change no behaviour a test can
see); the body of `if TYPE_CHECKING:`; import, global, nonlocal, pass, break and
continue; `assert` statements and `assert_never(...)` calls; `raise` statements (the `if` guarding
one is); a call on the name `log`, `logger` or `logging` (`log.warning(...)`,
`logging.getLogger(...)`), arguments included; `__repr__` and `__str__`; a node starting on a line
with the comment `# pragma: no mutate`, and a statement starting on such a line: all of a simple
statement, the header of a compound one (its body is mutated as usual).
"""

from __future__ import annotations

import ast
import re
import tokenize
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from io import StringIO
from pathlib import PurePath
from typing import TypeAlias


class Operator(StrEnum):
    ROR = "ROR"
    BOOL = "BOOL"
    NOT = "NOT"
    AOR = "AOR"
    AUG = "AUG"
    CONST = "CONST"
    NEG_IF = "NEG-IF"
    DEL = "DEL"


@dataclass(frozen=True, slots=True, kw_only=True)
class Mutant:
    """`original`, which starts on line `line` of `path`, replaced by `replacement`."""

    id: str
    """`<file name>:<line>:<ordinal among the mutants of that line>`, e.g. `machine.py:412:3`."""
    path: str
    line: int
    operator: Operator
    original: str
    replacement: str
    start: int
    """Character offset of `original` in the unmutated file."""
    end: int
    base: str = field(repr=False, compare=False)
    """The unmutated file, one string shared by all its mutants."""

    def source(self) -> str:
        """The whole mutated file."""
        return self.base[: self.start] + self.replacement + self.base[self.end :]


@dataclass(frozen=True, slots=True, kw_only=True)
class Generated:
    mutants: tuple[Mutant, ...]
    dropped: int
    """Mutants dropped because the file did not compile, or did not change."""


def mutants(path: str, source: str) -> list[Mutant]:
    """The mutants of `source`, the text of the file `path`, in line order."""
    return list(generate(path, source).mutants)


def generate(path: str, source: str) -> Generated:
    """The mutants of `source`, and how many were dropped."""
    module = ast.parse(source, filename=path)
    finder = _Finder(source, _pragma_lines(source))
    finder.module(module)
    futures = _future_imports(module)
    name = PurePath(path).name
    kept: list[Mutant] = []
    per_line: Counter[int] = Counter()
    dropped = 0
    for edit in sorted(finder.edits, key=_Edit.order):
        if source[edit.start : edit.end] == edit.replacement or not _compiles(source, edit, path, futures):
            dropped += 1
            continue
        per_line[edit.line] += 1
        kept.append(
            Mutant(
                id=f"{name}:{edit.line}:{per_line[edit.line]}",
                path=path,
                line=edit.line,
                operator=edit.operator,
                original=source[edit.start : edit.end],
                replacement=edit.replacement,
                start=edit.start,
                end=edit.end,
                base=source,
            )
        )
    return Generated(mutants=tuple(kept), dropped=dropped)


def _future_imports(module: ast.Module) -> str:
    """The module's `from __future__ import ...` lines, which a part compiled alone needs too."""
    futures = (
        node for node in module.body if isinstance(node, ast.ImportFrom) and node.module == "__future__"
    )
    return "".join(f"{ast.unparse(node)}\n" for node in futures)


def _compiles(source: str, edit: _Edit, path: str, futures: str) -> bool:
    """Whether the unit around `edit`, `edit` applied, compiles (as the whole file would)."""
    unit = edit.unit
    text = source[unit.start : edit.start] + edit.replacement + source[edit.end : unit.end]
    try:
        compile(futures + ("if 1:\n" + text if unit.indented else text), path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


_PRAGMA = re.compile(r"#.*\bpragma:\s*no\s+mutate\b")


def _pragma_lines(source: str) -> frozenset[int]:
    comments = tokenize.generate_tokens(StringIO(source).readline)
    return frozenset(
        token.start[0] for token in comments if token.type == tokenize.COMMENT and _PRAGMA.match(token.string)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Unit:
    """Whole lines of source: the outermost function, or else the top-level statement, around an edit."""

    start: int
    end: int
    indented: bool
    function: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class _Edit:
    line: int
    start: int
    end: int
    operator: Operator
    replacement: str
    unit: _Unit

    def order(self) -> tuple[int, int, int, int, str]:
        return (self.line, self.start, -self.end, list(Operator).index(self.operator), self.replacement)


_NEWLINE = re.compile(r"\r\n|\r|\n")


class _Positions:
    """Character offsets from `ast` positions, whose columns count UTF-8 bytes."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._starts = [0, *(match.end() for match in _NEWLINE.finditer(source))]

    def span(self, node: ast.expr | ast.stmt) -> tuple[int, int]:
        if node.end_lineno is None or node.end_col_offset is None:
            raise ValueError(f"{type(node).__name__} on line {node.lineno} has no end position")
        return self._offset(node.lineno, node.col_offset), self._offset(node.end_lineno, node.end_col_offset)

    def lines(self, node: ast.stmt) -> tuple[int, int]:
        """The offsets of the whole lines of `node`, decorators included."""
        decorators = getattr(node, "decorator_list", [])
        first = min([node.lineno, *(decorator.lineno for decorator in decorators)])
        last = node.end_lineno if node.end_lineno is not None else node.lineno
        return self._starts[first - 1], self._starts[last] if last < len(self._starts) else len(self._source)

    def _offset(self, lineno: int, col: int) -> int:
        start = self._starts[lineno - 1]
        line = (
            self._source[start : self._starts[lineno]] if lineno < len(self._starts) else self._source[start:]
        )
        return start + (col if line.isascii() else len(line.encode()[:col].decode()))


_Function: TypeAlias = ast.FunctionDef | ast.AsyncFunctionDef

_UNMUTATED_METHODS = frozenset({"__repr__", "__str__"})
_LOGGERS = frozenset({"log", "logger", "logging"})

_ROR: dict[type[ast.cmpop], tuple[type[ast.cmpop], ...]] = {
    ast.Lt: (ast.LtE, ast.GtE),
    ast.LtE: (ast.Lt, ast.Gt),
    ast.Gt: (ast.GtE, ast.LtE),
    ast.GtE: (ast.Gt, ast.Lt),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
}
_NEGATIONS = (ast.Eq, ast.NotEq, ast.Is, ast.IsNot, ast.In, ast.NotIn)
_AOR: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
}
_AUG: dict[type[ast.operator], type[ast.operator]] = {ast.Add: ast.Sub, ast.Sub: ast.Add}

# Binding strength, as in the grammar; what ast.unparse already parenthesizes counts as an atom.
_TEST, _OR, _AND, _NOT, _CMP, _FACTOR, _AWAIT, _ATOM = 4, 5, 6, 7, 8, 16, 18, 19
_BINARY: dict[type[ast.operator], int] = {
    ast.BitOr: 10,
    ast.BitXor: 11,
    ast.BitAnd: 12,
    ast.LShift: 13,
    ast.RShift: 13,
    ast.Add: 14,
    ast.Sub: 14,
    ast.Mult: 15,
    ast.MatMult: 15,
    ast.Div: 15,
    ast.FloorDiv: 15,
    ast.Mod: 15,
    ast.Pow: 17,
}


def _precedence(node: ast.expr) -> int:
    match node:
        case ast.Lambda() | ast.IfExp():
            return _TEST
        case ast.BoolOp(op=ast.Or()):
            return _OR
        case ast.BoolOp():
            return _AND
        case ast.UnaryOp(op=ast.Not()):
            return _NOT
        case ast.Compare():
            return _CMP
        case ast.BinOp(op=op):
            return _BINARY[type(op)]
        case ast.UnaryOp():
            return _FACTOR
        case ast.Await():
            return _AWAIT
        case _:
            return _ATOM


class _Finder:
    """Walks a module and collects the edits of every mutant, leaving out what is never mutated."""

    def __init__(self, source: str, pragma_lines: frozenset[int]) -> None:
        self._positions = _Positions(source)
        self._source = source
        self._pragma = pragma_lines
        self._unit = _Unit(start=0, end=len(source), indented=False, function=False)
        self.edits: list[_Edit] = []

    def module(self, module: ast.Module) -> None:
        for statement in module.body:
            self._unit = self._unit_of(statement)
            self.statement(statement, None)

    def _unit_of(self, node: ast.stmt) -> _Unit:
        start, end = self._positions.lines(node)
        return _Unit(
            start=start,
            end=end,
            indented=self._source[start : start + 1].isspace(),
            function=isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef),
        )

    # -- statements

    def body(self, statements: Iterable[ast.stmt], function: _Function | None) -> None:
        for statement in statements:
            self.statement(statement, function)

    def statement(self, node: ast.stmt, function: _Function | None) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            self.body(node.orelse, function)
        elif node.lineno in self._pragma:
            self._bodies_only(node, function)
        else:
            self._statement(node, function)

    def _statement(self, node: ast.stmt, function: _Function | None) -> None:
        match node:
            case ast.FunctionDef() | ast.AsyncFunctionDef():
                if node.name not in _UNMUTATED_METHODS:
                    self._function(node)
            case ast.ClassDef():
                self.expressions([*node.bases, *(k.value for k in node.keywords)])
                self.body(node.body, None)
            case ast.If() | ast.While():
                self._negate(node.test)
                self.expression(node.test)
                self.body(node.body, function)
                self.body(node.orelse, function)
            case ast.Expr():
                if not _is_inert(node.value):
                    self._delete(node, function)
                    self.expression(node.value)
            case ast.AugAssign():
                if (swapped := _AUG.get(type(node.op))) is not None:
                    mutated = ast.AugAssign(target=node.target, op=swapped(), value=node.value)
                    self._add(node, Operator.AUG, ast.unparse(mutated))
                self._delete(node, function)
                self._children(node)
            case ast.Assign() | ast.Delete():
                self._delete(node, function)
                self._children(node)
            case ast.AnnAssign():
                if node.value is not None:
                    self._delete(node, function)
                    self.expressions([node.target, node.value])
            case ast.Return():
                self._return(node, function)
                self._children(node)
            case (
                ast.Assert()
                | ast.Raise()
                | ast.Import()
                | ast.ImportFrom()
                | ast.Global()
                | ast.Nonlocal()
                | ast.Pass()
                | ast.Break()
                | ast.Continue()
            ):
                pass
            case _:  # for, with, try, match: their expressions and bodies
                self._children(node, function)

    def _function(self, node: _Function, *, header: bool = True) -> None:
        outer = self._unit
        if not outer.function:
            self._unit = self._unit_of(node)
        if header:
            self.arguments(node.args)
        self.body(node.body, node)
        self._unit = outer

    def _bodies_only(self, node: ast.stmt, function: _Function | None) -> None:
        """The statements nested in `node`, whose own line is exempt."""
        match node:
            case ast.FunctionDef() | ast.AsyncFunctionDef():
                if node.name not in _UNMUTATED_METHODS:
                    self._function(node, header=False)
            case ast.ClassDef():
                self.body(node.body, None)
            case _:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        self.statement(child, function)
                    elif isinstance(child, ast.ExceptHandler | ast.match_case):
                        self.body(child.body, function)

    def _delete(self, node: ast.stmt, function: _Function | None) -> None:
        if function is not None:
            self._add(node, Operator.DEL, "pass")

    def _return(self, node: ast.Return, function: _Function | None) -> None:
        if function is None or node.value is None or _is_none(node.value) or _is_none(function.returns):
            return
        self._add(node, Operator.DEL, "return None")

    def _negate(self, test: ast.expr) -> None:
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], _NEGATIONS):
            return
        self._add(test, Operator.NEG_IF, f"not ({ast.unparse(test)})")

    # -- expressions

    def expressions(self, nodes: Iterable[ast.expr]) -> None:
        for node in nodes:
            self.expression(node)

    def arguments(self, node: ast.arguments) -> None:
        self.expressions([*node.defaults, *(d for d in node.kw_defaults if d is not None)])

    def expression(self, node: ast.expr) -> None:
        match node:
            case ast.Constant(value=value):
                self._constant(node, value)
                return
            case ast.JoinedStr():
                return
            case ast.Call() if _is_log_call(node):
                return
            case ast.UnaryOp(op=ast.USub(), operand=ast.Constant(value=value)):
                if isinstance(value, int) and not isinstance(value, bool):
                    self._constant(node, -value)
                return
            case ast.UnaryOp(op=ast.Not()):
                self._replace(node, node.operand, Operator.NOT)
            case ast.UnaryOp(op=ast.USub()):
                self._replace(node, node.operand, Operator.AOR)
            case ast.Compare():
                self._compare(node)
            case ast.BoolOp(op=op):
                swapped = ast.Or() if isinstance(op, ast.And) else ast.And()
                self._replace(node, ast.BoolOp(op=swapped, values=node.values), Operator.BOOL)
            case ast.BinOp():
                self._binary(node)
            case ast.IfExp():
                self._negate(node.test)
        self._children(node)

    def _children(self, node: ast.AST, function: _Function | None = None) -> None:
        for child in ast.iter_child_nodes(node):
            match child:
                case ast.stmt():
                    self.statement(child, function)
                case ast.expr():
                    self.expression(child)
                case ast.arguments():
                    self.arguments(child)
                case ast.arg():  # nothing but an annotation
                    pass
                case _:  # handlers, with items, match cases and patterns, comprehensions, keywords
                    self._children(child, function)

    def _constant(self, node: ast.expr, value: object) -> None:
        mutated: int
        match value:
            case bool():
                mutated = not value
            case int():
                mutated = 1 if value == 0 else 0 if value in (1, -1) else value + 1
            case _:
                return
        literal: ast.expr = ast.Constant(mutated)
        if mutated < 0:
            literal = ast.UnaryOp(op=ast.USub(), operand=ast.Constant(-mutated))
        self._replace(node, literal, Operator.CONST)

    def _compare(self, node: ast.Compare) -> None:
        for index, op in enumerate(node.ops):
            for swapped in _ROR.get(type(op), ()):
                ops = [*node.ops[:index], swapped(), *node.ops[index + 1 :]]
                mutated = ast.Compare(left=node.left, ops=ops, comparators=node.comparators)
                self._replace(node, mutated, Operator.ROR)

    def _binary(self, node: ast.BinOp) -> None:
        swapped = _AOR.get(type(node.op))
        if swapped is None or _is_text(node.left) or _is_text(node.right):
            return
        self._replace(node, ast.BinOp(left=node.left, op=swapped(), right=node.right), Operator.AOR)

    def _replace(self, node: ast.expr, mutated: ast.expr, operator: Operator) -> None:
        text = ast.unparse(mutated)
        if _precedence(mutated) < _precedence(node):
            text = f"({text})"
        self._add(node, operator, text)

    def _add(self, node: ast.expr | ast.stmt, operator: Operator, replacement: str) -> None:
        if node.lineno in self._pragma:
            return
        start, end = self._positions.span(node)
        self.edits.append(
            _Edit(
                line=node.lineno,
                start=start,
                end=end,
                operator=operator,
                replacement=replacement,
                unit=self._unit,
            )
        )


def _is_none(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _is_text(node: ast.expr) -> bool:
    return isinstance(node, ast.JoinedStr) or (
        isinstance(node, ast.Constant) and isinstance(node.value, str | bytes)
    )


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_inert(value: ast.expr) -> bool:
    """A docstring or `...`, a log call or `assert_never(...)`: an expression statement never deleted."""
    if isinstance(value, ast.Constant) or _is_log_call(value):
        return True
    return isinstance(value, ast.Call) and (
        (isinstance(value.func, ast.Name) and value.func.id == "assert_never")
        or (isinstance(value.func, ast.Attribute) and value.func.attr == "assert_never")
    )


def _is_log_call(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    root = node.func
    while isinstance(root, ast.Attribute | ast.Call):
        root = root.value if isinstance(root, ast.Attribute) else root.func
    return isinstance(root, ast.Name) and root.id in _LOGGERS
