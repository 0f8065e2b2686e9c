"""Credentials for the PVE API: never on the command line, never in a message.

An API token (``USER@REALM!TOKENID=SECRET``) comes from ``$CMAN_PVE_TOKEN`` or
``--token-file``; a password (a ``root@pam`` login ticket, the only way PVE lets a caller set
features other than nesting) from ``$CMAN_PVE_PASSWORD`` or ``--password-file``. A file
readable by group or others is refused with the chmod that fixes it. Files beat the
environment; two credentials at the same level are refused rather than guessed between.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

TOKEN_ENV = "CMAN_PVE_TOKEN"
PASSWORD_ENV = "CMAN_PVE_PASSWORD"
ROOT = "root@pam"
_TOKEN = re.compile(r"([^@!\s]+@[A-Za-z][A-Za-z0-9.\-_]*)!([A-Za-z][A-Za-z0-9.\-_]*)=(\S+)", re.ASCII)
_USER = re.compile(r"[^@!:\s]+@[A-Za-z][A-Za-z0-9.\-_]*", re.ASCII)


@dataclass(frozen=True)
class Credentials:
    """Who cman is to PVE. ``secret`` never appears in repr, messages or argv."""

    user: str
    token_name: str | None
    secret: str = field(repr=False)
    source: str = ""
    """Where it came from (an environment variable or a file), for messages."""

    @property
    def is_token(self) -> bool:
        return self.token_name is not None

    @property
    def is_root_ticket(self) -> bool:
        """A root@pam password login: PVE's ``$authuser eq 'root@pam'`` (a token never is)."""
        return not self.is_token and self.user == ROOT

    @property
    def who(self) -> str:
        return f"{self.user}!{self.token_name}" if self.token_name else self.user


def read_secret_file(path: Path, option: str) -> str:
    """The first line of a 0600 file; exit 2 with the chmod line when others may read it."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{option} {path} is not a regular file")
        if info.st_mode & 0o077:
            raise UsageError(f"{option} {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o})",
                             hint=f"run: chmod 600 {path}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{option} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {option} {path}: {getattr(err, 'strerror', None) or type(err).__name__}") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise UsageError(f"{option} {path} is empty")
    return lines[0].strip()


def parse_token(text: str, source: str) -> Credentials:
    match = _TOKEN.fullmatch(text)
    if not match:  # the text itself is never repeated: it may hold the secret
        raise UsageError(f"{source} does not hold USER@REALM!TOKENID=SECRET")
    return Credentials(match.group(1), match.group(2), match.group(3), source)


def password_login(user: str, secret: str, source: str) -> Credentials:
    if not _USER.fullmatch(user):
        raise UsageError(f"invalid --pve-user {user!r}: use USER@REALM such as root@pam")
    return Credentials(user, None, secret, source)


def resolve(*, token_file: Path | None, password_file: Path | None, user: str = ROOT,
            environ: dict[str, str] | None = None) -> Credentials:
    """The one credential to use, from files first, then the environment."""
    env = dict(os.environ) if environ is None else environ
    if token_file and password_file:
        raise UsageError("give --token-file or --password-file, not both")
    if token_file:
        return parse_token(read_secret_file(token_file, "--token-file"), f"--token-file {token_file}")
    if password_file:
        return password_login(user, read_secret_file(password_file, "--password-file"), f"--password-file {password_file}")
    token, password = env.get(TOKEN_ENV), env.get(PASSWORD_ENV)
    if token and password:
        raise UsageError(f"both ${TOKEN_ENV} and ${PASSWORD_ENV} are set", hint="unset the one not meant for this call")
    if token:
        return parse_token(token.strip(), f"${TOKEN_ENV}")
    if password:
        return password_login(user, password, f"${PASSWORD_ENV}")
    raise UsageError("no PVE credentials", hint=f"set ${TOKEN_ENV}=USER@REALM!TOKENID=SECRET or ${PASSWORD_ENV} "
                                                "(root@pam), or pass --token-file / --password-file (mode 0600)")


def check_ca(path: Path | None) -> str | bool:
    """requests' ``verify``: the CA file given (PVE's is /etc/pve/pve-root-ca.pem), else the system's."""
    if path is None:
        return True
    if not path.is_file():
        raise UsageError(f"--pve-ca {path} is not a file")
    return str(path)
