"""The first two steps of every provision: the image, then the container running from it.

cman's images here are Debian ones with a job's packages (``debian-docker:RELEASE``,
``debian-registry:RELEASE``), built once with debootstrap from the host's Debian mirror
(:mod:`cman.bootstrap`, cached) and imported into the engine; or an image the user names,
pulled when missing. A container is made only when there is none by that name; one that
fails its first start is removed again, so nothing half-made is left.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..backends.base import Backend
from ..bootstrap import Target
from ..errors import CmanError, ContainerNotFound, ImageNotFound
from ..models import State
from .faults import Finding
from .guest import Guest
from .steps import Notify, Step, ok, problem

BOOTED = ("sh", "-c", "for i in $(seq 120); do pgrep -f /etc/init.d/rc >/dev/null || exit 0; sleep 0.5; done; exit 1")
"""Wait for sysvinit's boot scripts to finish (they mount cgroups and start services): a step run
meanwhile would race them."""


def debian_target(flavour: str, packages: Sequence[str]) -> Target:
    """cman's Debian image with ``packages`` for this host's release (``stable`` when debootstrap
    here does not know the host's own)."""
    from .. import bootstrap

    release = "stable"
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "VERSION_CODENAME" and value.strip('"') in bootstrap.debian_releases():
                release = value.strip('"')
    return bootstrap.parse_target(f"debian:{release}").with_packages(flavour, packages)


@dataclass
class SystemContainer:
    """The image and container steps for container ``name`` of ``backend``."""

    backend: Backend
    name: str
    notify: Notify
    target: Callable[[], Target]
    """cman's image for the job (called only when it is needed)."""
    image: str | None = None
    """The user's image instead (pulled when missing; None: :attr:`target`'s)."""
    profiles: tuple[str, ...] = ()
    network: str | None = None
    dns: tuple[str, ...] = ()
    first_boot: Callable[[Guest], None] | None = None
    """Run once in a new container after its boot scripts (a failure removes it again)."""

    @property
    def guest(self) -> Guest:
        return Guest(self.backend, self.name)

    def state(self) -> State | None:
        try:
            return self.backend.inspect(self.name).state
        except ContainerNotFound:
            return None

    def _image(self) -> str:
        if self.image is None:
            self.image = self.target().name
        return self.image

    def check_image(self) -> Finding:
        if self.state() is not None:
            return ok("image", "the container exists")
        try:
            self.backend.image_inspect(self._image())
        except ImageNotFound:
            return problem("image", f"{self._image()} is not on {self.backend.name}")
        return ok("image", self._image())

    def make_image(self, _found: Finding) -> str:
        image = self._image()
        target = self.target()
        if image != target.name:
            from ..lifecycle import ensure_image

            ensure_image(self.backend, image)
            return f"pulled {image}"
        from .. import bootstrap

        built = bootstrap.build(target, progress=lambda m: self.notify(f"  image: {m}"))
        self.notify(f"  image: importing {built.tarball.name} into {self.backend.name} as {image}")
        self.backend.image_import(built.tarball, image)
        return f"{'imported' if built.cached else 'built and imported'} {image}"

    def check_container(self) -> Finding:
        state = self.state()
        if state == State.RUNNING:
            return ok("container", f"{self.name} runs")
        return problem("container", f"{self.name} is {state.value if state else 'not there'}")

    def make_container(self, _found: Finding) -> str:
        if self.state() is not None:
            self.backend.start(self.name)
            self.guest.run(BOOTED, timeout=90)
            return "started"
        from .. import lifecycle, profiles

        profile = profiles.load_many(list(self.profiles)) if self.profiles else None
        spec = lifecycle.spec_with_profile(profile, image=self._image(), name=self.name, network=self.network,
                                       dns=self.dns)
        lifecycle.check_spec(self.backend, spec)
        if spec.privileged:
            self.notify(f"  warning: the container runs privileged (profile {profile.name if profile else '?'})")
        self.backend.create(spec)
        try:
            self.backend.start(self.name)
            self.guest.run(BOOTED, timeout=90)
            if self.first_boot is not None:
                self.first_boot(self.guest)
        except BaseException:  # nothing half-made: a container that never got going goes away
            with contextlib.suppress(CmanError):
                self.backend.remove(self.name, force=True)
            raise
        with_profiles = f" with profile {', '.join(self.profiles)}" if self.profiles else ""
        return f"created from {self._image()}{with_profiles} and started"

    def steps(self) -> list[Step]:
        return [Step("image", self.check_image, self.make_image),
                Step("container", self.check_container, self.make_container)]
