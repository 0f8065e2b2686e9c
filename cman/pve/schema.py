"""PVE's published LXC API parameter schema, applied to request parameters as PVE applies it.

``lxc-api-schema.json`` beside this module is a verbatim copy of the parameter facts PVE
publishes for the LXC endpoints (``proxmox/pve-docs`` ``api-viewer/apidata.js``, commit
e5010dc of 2026-04-30; the file's own ``source`` key says so; sha256 in :data:`SHA256`).
Nothing here was checked against a running PVE: none can run on Debian.

The checks follow pve-common's ``PVE::JSONSchema::check_prop``: every value is a string on
the wire; type, then ``format`` (a named format, or a property string whose sub-keys are
checked the same way), ``pattern`` (anchored), ``maxLength``/``minLength``,
``minimum``/``maximum`` and ``enum``; a parameter the endpoint does not list is refused
(``additionalProperties: 0``), a required one that is missing too. The named formats are
not in the schema: their rules below are copied from pve-common (``JSONSchema.pm``) and
pve-container (``LXC/Config.pm``); :data:`APPROXIMATE` lists the two that are simplified.

cman validates every request with this before sending it, and the test stand-in
(``tests/pve_standin.py``) validates every request it receives with it.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

SCHEMA_FILE = "lxc-api-schema.json"
SHA256 = "3178b9446e5092c08dd73836776766ad5b1d388054edbf7f3bc4ee194255584b"
"""Of the copied file; tests/unit/test_pve_schema.py keeps the copy unedited."""

APPROXIMATE = ("pve-ct-timezone", "pve-lxc-dev-string")
"""PVE checks these against the node's zoneinfo and device nodes; here only their shape."""


@functools.cache
def load() -> dict[str, Any]:
    """The schema's ``endpoints`` table: ``"METHOD /path/{param}"`` -> endpoint facts."""
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    endpoints: dict[str, Any] = json.loads(text)["endpoints"]
    return endpoints


def properties(endpoint: str) -> dict[str, Any]:
    """The parameter schemas of ``endpoint`` (``KeyError`` for one the schema lacks)."""
    props: dict[str, Any] = load()[endpoint]["parameters"]["properties"]
    return props


# -- Perl patterns and named formats -------------------------------------------------------------


@functools.cache
def perl_regex(pattern: str) -> re.Pattern[str]:
    """A schema pattern (Perl) as Python: ``(?^:...)`` is a group with default flags."""
    return re.compile(pattern.replace("(?^:", "(?:"), re.ASCII)


def _rx(pattern: str, flags: int = 0) -> Callable[[str], bool]:
    compiled = re.compile(pattern, flags | re.ASCII)
    return lambda value: compiled.fullmatch(value) is not None


def split_list(text: str) -> list[str]:
    """PVE::Tools::split_list: NUL-separated, else commas, semicolons and spaces."""
    if "\0" in text:
        return text.split("\0")
    return text.replace(",", " ").replace(";", " ").split()


def _ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _ipv6(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return "%" not in value


def _cidr(value: str, check: Callable[[str], bool], low: int, high: int) -> bool:
    """pve_verify_cidrv4/6: ADDRESS/PREFIX with PVE's prefix bounds (8 < prefix <= 32/128)."""
    address, sep, prefix = value.partition("/")
    return bool(sep) and check(address) and prefix.isdigit() and low < int(prefix) <= high


_DNS_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?"
_IFACE = _rx(r"[a-z][a-z0-9_]{1,20}(?:[:.]\d+)?", re.IGNORECASE)


def _ip_ll_iface(value: str) -> bool:
    """pve-container's lxc-ip-with-ll-iface: an IP, or a link-local fe80:...%IFACE."""
    match = re.fullmatch(r"(fe80:[^%]+)%(.*)", value, re.ASCII)
    if match and _ipv6(match.group(1)) and _IFACE(match.group(2)):
        return True
    return _ipv4(value) or _ipv6(value)


def _mp_string(value: str) -> bool:
    """pve-container's verify_lxc_mp_string: no /./ or /../, no trailing /. or /.., no leading ../."""
    return not (re.search(r"/\.\.?/", value) or re.search(r"/\.\.?$", value) or value.startswith("../"))


def _startup(value: str) -> bool:
    parts = [p for p in value.split(",") if p.strip()]
    return bool(parts) and all(re.fullmatch(r"(?:order=)?\d+|up=\d+|down=\d+", p, re.ASCII) for p in parts)


_TAG = _rx(r"[a-z0-9_][a-z0-9_\-+.]*", re.IGNORECASE)

FORMATS: dict[str, Callable[[str], bool]] = {
    "pve-node": _rx(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?"),
    "pve-vmid": _rx(r"[1-9][0-9]{2,8}"),
    "pve-storage-id": _rx(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.IGNORECASE),
    "pve-configid": _rx(r"[a-z][a-z0-9_-]+", re.IGNORECASE),
    "pve-poolid": _rx(r"[A-Za-z0-9_\-]+"),
    "pve-volume-id": _rx(r"[a-z][a-z0-9\-_.]*[a-z0-9]:.+", re.IGNORECASE),
    "dns-name": _rx(rf"(?:{_DNS_LABEL}\.)*{_DNS_LABEL}"),
    "ipv4": _ipv4,
    "ipv6": _ipv6,
    "mac-addr": _rx(r"[a-f0-9][02468ace](?::[a-f0-9]{2}){5}", re.IGNORECASE),
    "pve-ipv4-config": lambda v: v in ("dhcp", "manual") or _cidr(v, _ipv4, 7, 32),
    "pve-ipv6-config": lambda v: v in ("auto", "dhcp", "manual") or _cidr(v, _ipv6, 7, 128),
    "disk-size": _rx(r"\d+(?:\.\d+)?[KMGT]?"),
    "pve-lxc-mp-string": _mp_string,
    "lxc-ip-with-ll-iface": _ip_ll_iface,
    "pve-startup-order": _startup,
    "pve-tag-list": lambda v: all(_TAG(t) for t in re.split(r"[;, ]+", v.strip()) if t),
    "pve-ct-timezone": lambda v: v == "host" or bool(re.fullmatch(r"UTC|[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)+", v)),
    "pve-lxc-dev-string": lambda v: v.startswith("/dev/") and _mp_string(v),
}
"""Named formats -> check. A ``NAME-list`` format is NAME applied to each of split_list."""


FORMAT_WORDS = {
    "pve-vmid": "an integer from 100 to 999999999",
    "pve-node": "letters, digits and inner hyphens",
    "dns-name": "a DNS name: labels of letters, digits and inner hyphens, separated by dots",
    "pve-ipv4-config": "dhcp, manual or IPv4/PREFIX with a prefix from 8 to 32",
    "lxc-ip-with-ll-iface-list": "IP addresses separated by spaces",
}
"""How a few named formats read in an error message (else their name is shown)."""


def check_named_format(name: str, value: str) -> bool:
    if name.endswith("-list") and name not in FORMATS:
        each = FORMATS.get(name[: -len("-list")])
        if each is None:
            raise KeyError(name)
        return all(each(item) for item in split_list(value))
    return FORMATS[name](value)


# -- values, property strings, whole requests ----------------------------------------------------


class SchemaError(ValueError):
    """A value breaks the schema; ``errors`` maps each parameter (or sub-key) to why, as PVE's 400 does."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = dict(errors)


_NUMBER = re.compile(r"[+-]?(?:\d+\.\d+|\d+\.|\.\d+|\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_BOOLEAN_WORDS = {"1": "1", "on": "1", "yes": "1", "true": "1", "0": "0", "off": "0", "no": "0", "false": "0"}


def check_value(schema: Mapping[str, Any], value: str) -> str | None:
    """Why ``value`` breaks ``schema`` (check_prop's order and words), or None."""
    kind = schema.get("type")
    if kind == "boolean" and value not in ("0", "1"):
        return f"type check ('boolean') failed - got '{value}'"
    if kind == "integer" and not _INTEGER.fullmatch(value):
        return f"type check ('integer') failed - got '{value}'"
    if kind == "number" and not _NUMBER.fullmatch(value):
        return f"type check ('number') failed - got '{value}'"
    fmt = schema.get("format")
    if isinstance(fmt, dict):
        try:
            parse_property_string(fmt, value)
        except SchemaError as err:
            return f"invalid format - {err}"
    elif isinstance(fmt, str):
        try:
            ok = check_named_format(fmt, value)
        except KeyError:
            return f"undefined format '{fmt}'"
        if not ok:
            return f"invalid format - not {FORMAT_WORDS[fmt]}" if fmt in FORMAT_WORDS else \
                f"invalid format - value does not look like a valid {fmt}"
    pattern = schema.get("pattern")
    if pattern and not perl_regex(pattern).fullmatch(value):
        return "value does not match the regex pattern"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return f"value may only be {schema['maxLength']} characters long"
    if "minLength" in schema and len(value) < schema["minLength"]:
        return f"value must be at least {schema['minLength']} characters long"
    if _NUMBER.fullmatch(value):
        if "maximum" in schema and float(value) > schema["maximum"]:
            return f"value must have a maximum value of {schema['maximum']}"
        if "minimum" in schema and float(value) < schema["minimum"]:
            return f"value must have a minimum value of {schema['minimum']}"
    if "enum" in schema and value not in schema["enum"]:
        return f"value '{value}' does not have a value in the enumeration '{', '.join(schema['enum'])}'"
    return None


def parse_property_string(fmt: Mapping[str, Any], text: str) -> dict[str, str]:
    """``k=v,k=v`` (and the default key's bare value) as PVE's parse_property_string reads it."""
    found: dict[str, str] = {}
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    for part in text.split(","):
        if not part.strip():
            continue
        match = re.fullmatch(r"([^=]+)=(.+)", part, re.DOTALL)
        if match:
            key, value = match.group(1), match.group(2)
            if key in found:
                raise SchemaError({key: "duplicate key in comma-separated list property"})
            if key not in fmt:
                raise SchemaError({key: "invalid key in comma-separated list property"})
            if fmt[key].get("type") == "boolean":
                value = _BOOLEAN_WORDS.get(value.lower(), value)
            found[key] = value
        elif "=" not in part:
            if default_key is None:
                raise SchemaError({"_root": "value without key, but schema does not define a default key"})
            if default_key in found:
                raise SchemaError({default_key: "duplicate key in comma-separated list property"})
            found[default_key] = part
        else:
            raise SchemaError({"_root": "missing key in comma-separated list property"})
    errors = check_object(fmt, found)
    if errors:
        raise SchemaError(errors)
    return found


def schema_key(name: str) -> str:
    """``net0`` -> ``net[n]``: indexed parameters share one schema entry."""
    match = re.fullmatch(r"([a-z]+)(\d+)", name)
    return f"{match.group(1)}[n]" if match else name


def check_object(props: Mapping[str, Any], values: Mapping[str, str], *, skip_missing: frozenset[str] = frozenset()
                 ) -> dict[str, str]:
    """Every error of ``values`` against ``props``: unknown keys, missing required ones, bad values."""
    errors: dict[str, str] = {}
    for name, value in values.items():
        sub = props.get(name) or props.get(schema_key(name))
        if sub is None:
            errors[name] = "property is not defined in schema and the schema does not allow additional properties"
        elif (why := check_value(sub, value)) is not None:
            errors[name] = why
    for name, sub in props.items():
        if not sub.get("optional") and "[n]" not in name and name not in values and name not in skip_missing:
            errors[name] = "property is missing and it is not optional"
    return errors


def check_request(endpoint: str, params: Mapping[str, str], *, skip_missing: frozenset[str] = frozenset()
                  ) -> dict[str, str]:
    """Every error of one request's parameters (path and body together) against ``endpoint``."""
    return check_object(properties(endpoint), params, skip_missing=skip_missing)


def wire(value: object) -> str:
    """A Python value as PVE reads it off the wire: booleans are 1 and 0, never True/False."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
