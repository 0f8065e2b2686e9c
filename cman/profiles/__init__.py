"""Profiles: named, declarative container settings in TOML files (``cman run --profile NAME``).

Where a profile is found, first hit wins (a whole file, never merged across folders):

1. ``$XDG_CONFIG_HOME/cman/profiles/NAME.toml`` (default ``~/.config``): the user's;
2. ``/etc/cman/profiles/NAME.toml``: the machine's;
3. the profiles shipped inside the package (``cman/profiles/*.toml``; the repository's top-level
   ``profiles/`` holds links to them), so an installed cman finds them without a source tree.

The folders are those of cman's config file (:func:`cman.config.user_file`), so one
``XDG_CONFIG_HOME`` moves both. :mod:`.schema` says what a file holds and how profiles merge;
:mod:`.allow` which raw engine keys a profile may set. The PVE provisioning reads ``[pve]``
through :func:`load` and :meth:`Profile.extras` like any backend.
:mod:`.store` finds and reads the files. The names load on first use (:mod:`cman._sys.lazy`),
so a backend that checks a profile's raw keys (:mod:`.allow`) loads none of this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._sys.lazy import lazy_attributes

if TYPE_CHECKING:
    from .schema import Profile, merge
    from .store import SHIPPED_DIR, SYSTEM_DIR, ProfileInfo, available, check_name, folders, load, load_many

__all__ = ["SHIPPED_DIR", "SYSTEM_DIR", "Profile", "ProfileInfo", "available", "check_name", "folders", "load",
           "load_many", "merge"]
__getattr__ = lazy_attributes(__name__, {
    "Profile": "schema",
    "merge": "schema",
    "ProfileInfo": "store",
    "available": "store",
    "folders": "store",
    "load": "store",
    "load_many": "store",
    "SHIPPED_DIR": "store",
    "SYSTEM_DIR": "store",
    "check_name": "store",
})
