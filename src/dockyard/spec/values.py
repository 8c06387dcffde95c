"""What a scatter value may be, depending on where it goes.

A scatter value is data, often a file name chosen by whoever filled the data folder,
and it must stay data wherever it is pasted:

- every value becomes part of an instance name (``align[s1]``), a file name and a
  terminal line: so it is a usable file name (1 to 255 bytes, no ``/``, not ``.`` or
  ``..``) of printable characters only (no control, format or separator characters:
  no newline, tab, ESC, bidi override);
- instance keys join the values of several variables with ``,`` (``x[a,b]``): so in a
  step with two or more variables a value has no ``,``, and no two instances share a key;
- a value pasted into a command that a shell reads (a string ``command``, which runs
  through ``sh -c``, or the script of ``[sh, -c, SCRIPT]``) must be *shell-inert*: made
  only of characters that mean nothing to a POSIX shell in any quoting context
  (:data:`SHELL_INERT`). Elsewhere (exec-form arguments, env values, input paths) any
  printable text is one plain string.
"""

from __future__ import annotations

import functools
import os
import re
import string
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

from dockyard.errors import short_repr
from dockyard.spec.interpolate import unclosed, uses, variables
from dockyard.spec.model import MAX_ARGUMENT_BYTES, Defaults, Step
from dockyard.spec.params import PREFIX, unknown

# Letters and digits (any script: their UTF-8 bytes are all above 0x7f, which no shell
# treats as syntax) and these, which a POSIX shell reads as plain word characters in
# every quoting context: not quotes, not $ ` \ (expansion and escapes), not ; & | < > ( )
# (operators), not space (word splitting), not * ? [ ] (globbing), not { } ~ (bash brace
# and tilde expansion), not # (comments), not ! ^ (negation, old pipes).
SHELL_INERT = frozenset(string.ascii_letters + string.digits + "_.-+,@%=:")
SHELL_INERT_SHOWN = "letters, digits and _ . - + , @ % = :"
SHELLS = frozenset({"sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "busybox"})
# Tools that take a command line as one argument and hand it to a shell (or split it as
# one): the option that precedes it.
WRAPPERS = {
    "env": ("-S", "--split-string"),
    "flock": ("-c", "--command"),
    "su": ("-c", "--command"),
    "runuser": ("-c", "--command"),
    "script": ("-c", "--command"),
}
MAX_VALUE_BYTES = 255  # NAME_MAX: a value is also a file name
# dockyard names an attempt's log, work folder and cgroup after its instance
# ("<project>-<run>-<instance>-<attempt>", with a hash when the name needs escaping):
# each must stay within NAME_MAX.
MAX_INSTANCE_NAME = 190
MAX_COMBINATIONS = 100_000  # instances per step
MAX_EXEC_BYTES = 1024**2  # arguments and env of a step together, within ARG_MAX
MAX_REPORTED = 5  # offending values reported per variable; the rest are counted
_OPTIONS = re.compile(r"[-+][A-Za-z]+")


def shell_scripts(command: str | Sequence[str] | None) -> list[tuple[int | None, str]]:
    """The parts of ``command`` that a shell parses as code: (list index or None, text).

    A string command runs through ``sh -c``. A list is the exec form, whose items are
    plain arguments, except when it runs a shell with ``-c`` (``[sh, -c, SCRIPT]``,
    ``[bash, -o, pipefail, -euc, SCRIPT]``, ``[env, X=1, sh, -c, SCRIPT]``): then
    SCRIPT, the shell's first operand, is code all the same. The shell is looked for
    anywhere in the list (behind env, nice, timeout …), which errs on the safe side. So
    is the command line that a tool hands to a shell itself (``[env, -S, LINE]``,
    ``[flock, FILE, -c, LINE]``, ``[su, -c, LINE]``).
    """
    if command is None:
        return []
    if isinstance(command, str):
        return [(None, command)]
    argv = list(command)
    handed = _handed_to_a_shell(argv)
    if handed is not None:
        return [(handed, argv[handed])]
    shell = next((i for i, arg in enumerate(argv) if os.path.basename(arg) in SHELLS), None)
    if shell is None:
        return []
    i = shell + 1
    if os.path.basename(argv[shell]) == "busybox" and argv[i : i + 1] == ["sh"]:
        i += 1
    dash_c = False
    while i < len(argv):  # sh [-abCefhimnuvx] [-o option] -c [...] SCRIPT [name [args]]
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if arg.startswith("--"):  # bash's long options; two take a value
            i += 2 if arg in ("--rcfile", "--init-file") else 1
        elif _OPTIONS.fullmatch(arg):
            dash_c = dash_c or (arg[0] == "-" and "c" in arg)
            i += 2 if arg[-1] in "oO" else 1  # -o NAME, +o NAME, bash's -O NAME
        else:
            break
    return [(i, argv[i])] if dash_c and i < len(argv) else []


def _handed_to_a_shell(argv: list[str]) -> int | None:
    """The index of a command line that a wrapper tool runs through a shell (or splits
    like one), when ``argv`` runs one of those tools."""
    for i, arg in enumerate(argv):
        options = WRAPPERS.get(os.path.basename(arg))
        if options is None:
            continue
        for j in range(i + 1, len(argv)):
            if argv[j] in options and j + 1 < len(argv):
                return j + 1
            if any(argv[j].startswith(o + "=") for o in options):
                return j
    return None


def not_shell_inert(value: str, *, paths: bool = False) -> str | None:
    """The first character of ``value`` that a shell could read as syntax, or None.

    With ``paths``, ``/`` too is data (a parameter or a sheet's column may be a path; a
    scatter key may not, since it names a file)."""
    for char in value:
        if char == "/" and paths:
            continue
        if char not in SHELL_INERT and not (ord(char) > 0x7F and char.isalnum()):
            return char
    return None


def value_problem(value: str) -> str | None:
    """Why ``value`` cannot be a scatter value anywhere (see the module docstring)."""
    if not value or value in (".", "..") or "/" in value:
        return f"expected a value usable as a file name, found {short_repr(value)}"
    if not value.isprintable():
        return (
            f"expected a value of printable characters, found {short_repr(value)}: a scatter value "
            "becomes an instance name shown on terminals, where a control character "
            "(newline, tab, ESC …) or an invisible one would garble or forge what is shown; "
            "rename the file or change the value"
        )
    if len(value.encode()) > MAX_VALUE_BYTES:
        return (
            f"expected a value of at most {MAX_VALUE_BYTES} bytes (the longest file name), "
            f"found {len(value.encode())} bytes: {value[:40]!r}…"
        )
    return None


def ambiguity_problem(value: str) -> str | None:
    if "," not in value:
        return None
    return (
        f"value {short_repr(value)} contains ',', which joins the values of this step's scatter "
        "variables in its instance keys (x[a,b]), so two instances could get the same key; "
        "rename it, or scatter over one variable"
    )


def shell_problem(value: str, var: str, where: str) -> str | None:
    char = not_shell_inert(value)
    if char is None:
        return None
    return (
        f"value {short_repr(value)} of scatter variable {var!r} would be pasted into {where}, "
        f"where {char!r} is shell syntax, not data (a file named like this could run "
        f"code); rename it to {SHELL_INERT_SHOWN} only, or write the command as a list "
        "(exec form, e.g. [wc, -c, /in/data/${" + var + "}]), where each value is one "
        "plain argument"
    )


Add = Callable[[Sequence[str | int], str], None]


def check_step_values(
    add: Add,
    loc: Sequence[str | int],
    command: str | Sequence[str] | None,
    values: dict[str, tuple[str, ...]],
    listed: set[str],
) -> None:
    """Report the values that cannot be used where this step uses them.

    ``listed``: the variables whose values the file lists (located one by one); the
    others come from a glob. At most MAX_REPORTED problems per variable and kind.
    """
    scripts = {name: index for index, text in shell_scripts(command) for name in variables(text)}
    for var, found in values.items():
        checks: list[Callable[[str], str | None]] = []
        if len(values) > 1:
            checks.append(ambiguity_problem)
        if var in scripts:
            index = scripts[var]
            context = (
                "the shell command (a string command runs through sh -c)"
                if index is None
                else f"the shell script of command[{index}]"
            )
            checks.append(functools.partial(shell_problem, var=var, where=context))
        where: list[str | int] = [*loc, "scatter", var]
        located = var in listed
        numbered = list(enumerate(found))
        _report(add, where, located, _refused(numbered, value_problem))
        usable = [(i, value) for i, value in numbered if value_problem(value) is None]
        for check in checks:
            _report(add, where, located, _refused(usable, check))


def _refused(
    values: list[tuple[int, str]], check: Callable[[str], str | None]
) -> Iterator[tuple[int, str]]:
    for index, value in values:
        problem = check(value)
        if problem is not None:
            yield index, problem


def _report(
    add: Add, where: list[str | int], located: bool, problems: Iterator[tuple[int, str]]
) -> None:
    for reported, (index, message) in enumerate(problems):
        if reported == MAX_REPORTED:
            more = 1 + sum(1 for _ in problems)
            add(where, f"… and {more} more values like these")
            return
        add([*where, index] if located else where, message)


def check_name_length(
    add: Add, loc: Sequence[str | int], values: dict[str, tuple[str, ...]]
) -> None:
    longest = {var: max(found, key=len) for var, found in values.items() if found}
    length = len(str(loc[-1])) + 2 + sum(map(len, longest.values())) + len(longest) - 1
    if longest and length > MAX_INSTANCE_NAME:
        shown = ", ".join(f"{var}: {short_repr(value, 60)}" for var, value in longest.items())
        add(
            [*loc, "scatter"],
            f"an instance name of this step (step[values]) can be {length} characters long, "
            f"more than the {MAX_INSTANCE_NAME} that dockyard's log, work folder and cgroup "
            f"names allow; shorten the longest values ({shown})",
        )


def check_interpolation(
    add: Add,
    loc: Sequence[str | int],
    step: Step,
    defaults: Defaults,
    *,
    columns: Collection[str] | None = (),
    params: Collection[str] = (),
) -> None:
    """Every ``${name}`` names a scatter variable of the step (or a column of its sample
    sheet) or ``params.NAME`` a declared parameter, and every ``${`` is closed.

    ``columns`` None: a sheet could not be read, so which variables it makes is not known
    (its problems are reported; the variables are not)."""
    known = set(step.scatter) | set(columns or ())
    for where, text in _texts(loc, step, defaults):
        if unclosed(text):
            add(where, "'${' without its '}'; write $${ for a literal '${'")
        for name in variables(text):
            if name.startswith(PREFIX):
                if name[len(PREFIX) :] not in params:
                    add(where, f"${{{name}}}: " + unknown(name[len(PREFIX) :], params))
            elif name not in known and columns is not None:
                hint = (
                    f" (scatter variables here: {', '.join(sorted(known))})"
                    if known
                    else " (this step has no scatter variables; write $${...} for a literal)"
                )
                step_name = f" in step {loc[-1]!r}" if where[0] == "defaults" else ""
                add(where, f"unknown variable ${{{name}}}{step_name}{hint}")


def check_params_in_scripts(
    add: Add, loc: Sequence[str | int], step: Step, params: Mapping[str, str]
) -> None:
    """A parameter pasted into a shell script is shell-inert (``/`` allowed: a path)."""
    for index, script in shell_scripts(step.command):
        for name in variables(script):
            value = params.get(name) if name.startswith(PREFIX) else None
            char = None if value is None else not_shell_inert(value, paths=True)
            if char is None:
                continue
            where = [*loc, "command"] if index is None else [*loc, "command", index]
            add(
                where,
                f"parameter {name[len(PREFIX) :]!r} = {short_repr(value)} would be pasted into "
                f"the shell script, where {char!r} is shell syntax, not data; give it "
                f"{SHELL_INERT_SHOWN} and / only, or pass it through env (env: {{X: "
                f'${{{name}}}}}, then "$X" in the script) or use the exec form',
            )


def check_lengths(
    add: Add,
    loc: Sequence[str | int],
    step: Step,
    defaults: Defaults,
    values: dict[str, tuple[str, ...]],
) -> None:
    """No argument or env entry is longer than ``execve`` takes, once values are pasted in,
    and all of them together stay well within its total (ARG_MAX, 2 MiB by default)."""
    longest = {var: max((len(v.encode()) for v in vals), default=0) for var, vals in values.items()}
    total = 0
    for where, text in _texts(loc, step, defaults):
        if where[-2] == "inputs":
            continue
        size = len(text.encode())
        if where[-2] == "env":
            size += len(str(where[-1]).encode()) + 1  # NAME=value
        for name, count in uses(text).items():
            size += count * (longest.get(name, 0) - len(name) - 3)
        total += size
        if size > MAX_ARGUMENT_BYTES:
            add(
                where,
                f"with the scatter values pasted in this is up to {size} bytes, more than the "
                f"kernel passes to a program ({MAX_ARGUMENT_BYTES}); put it in a file under "
                "inputs:",
            )
    if total > MAX_EXEC_BYTES:
        add(
            loc,
            f"the command and env together are up to {total} bytes with the scatter values "
            f"pasted in, more than {MAX_EXEC_BYTES} (the kernel passes at most 2 MiB to a "
            "program); put the long parts in files under inputs:",
        )


def _texts(
    loc: Sequence[str | int], step: Step, defaults: Defaults
) -> Iterator[tuple[list[str | int], str]]:
    """Where the step's interpolated texts are written, and what they say."""
    if isinstance(step.command, str):
        yield [*loc, "command"], step.command
    elif step.command is not None:
        for i, part in enumerate(step.command):
            yield [*loc, "command", i], part
    for key, value in step.env.items():
        yield [*loc, "env", key], value
    for key, value in defaults.env.items():
        if key not in step.env:
            yield ["defaults", "env", key], value
    for key, value in step.inputs.items():
        yield [*loc, "inputs", key], value
