"""Rules for the names a pipeline file hands to the engine: images, capabilities, env.

Each rule is the engine's own (or the kernel's), checked while the file is read, so
that ``dockyard validate`` accepts nothing the engine then refuses at ``run``.
"""

from __future__ import annotations

import re

from dockyard.errors import short_repr

# A name of the pipeline file (steps, services, volumes): one path component, lower case.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

# The image reference grammar of the distribution project (what the engine parses):
#   reference := name [":" tag] ["@" digest]
#   name      := [domain "/"] path-component ["/" path-component]*
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|-+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # ASCII, like Go's \w
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?")
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}  # the engine knows no others
MAX_NAME_LENGTH = 255  # the engine's limit on the name part

REFERENCE_HINT = (
    "an image reference like busybox:1.36 or registry.example.org/team/tool:2.1 "
    "(lower-case name, optional :tag and @sha256:digest)"
)


def reference_problem(ref: str, *, digest_allowed: bool = True) -> str | None:
    """Why the engine would refuse ``ref`` as an image reference, or None when it is fine."""
    match = _REFERENCE.fullmatch(ref)
    found = short_repr(ref)
    if match is None:
        if ref.lower() != ref and _REFERENCE.fullmatch(ref.lower()):
            return f"expected a lower-case image name, found {found}"
        return f"expected {REFERENCE_HINT}, found {found}"
    if len(match.group("name")) > MAX_NAME_LENGTH:
        return f"expected an image name of at most {MAX_NAME_LENGTH} characters, found {found}"
    digest = match.group("digest")
    if digest is not None:
        if not digest_allowed:
            return f"expected name:tag without a digest (a tag cannot pin), found {found}"
        algorithm, _, hex_digits = digest.partition(":")
        if _DIGEST_LENGTHS.get(algorithm) != len(hex_digits):
            return (
                f"expected a digest sha256:<64 hex digits> (or sha384, sha512), "
                f"found {short_repr(digest)} in {found}"
            )
    return None


# Linux capabilities as the engine names them (without "CAP_"), in the kernel's order
# (capability(7)): a name's index is its bit in /proc/PID/status CapEff.
# fmt: off
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
# fmt: on
# What cap_add may grant: those of the engine's own default set that dockyard drops, and
# a few that act only inside the container's own namespaces. The others act on the host
# (load modules, mount, set the clock, open files by handle past the mount namespace, …):
# a pipeline from a stranger must not be able to ask for them.
GRANTABLE = frozenset(
    {
        "AUDIT_WRITE",
        "FSETID",
        "MKNOD",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SETFCAP",
        "SETPCAP",
        "SYS_CHROOT",
        "IPC_LOCK",
        "NET_ADMIN",
        "SYS_NICE",
        "SYS_PTRACE",
    }
)


def capability(value: object) -> str:
    """A capability ``cap_add`` may grant, normalised to the engine's name (``NET_RAW``)."""
    if not isinstance(value, str):
        raise ValueError(f"expected a capability name like NET_RAW, found {short_repr(value)}")
    name = value.upper().removeprefix("CAP_")
    if name == "ALL":
        raise ValueError(
            "cap_add: ALL is refused: it would grant every capability, SYS_ADMIN included, "
            "which makes a container all but privileged; name the ones the step needs"
        )
    if name not in CAPABILITIES:
        raise ValueError(
            f"expected a Linux capability name like NET_RAW, found {short_repr(value)}"
        )
    if name not in GRANTABLE:
        raise ValueError(
            f"capability {name} acts on the host beyond the step's container, so dockyard "
            f"does not grant it; grantable: {', '.join(sorted(GRANTABLE))}"
        )
    return name


def env_name(value: object) -> str:
    """An environment variable name the engine and ``execve`` can pass on as ``NAME=value``."""
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"expected an environment variable name like LANG, found {short_repr(value)}"
        )
    if "=" in value or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(
            f"expected an environment variable name without '=', spaces or control "
            f"characters, found {short_repr(value)}"
        )
    return value
