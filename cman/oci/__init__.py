"""OCI images without an engine: references, the per-host OCI layout, image configs.

Used by the engines that have no registry client of their own (LXD, raw LXC): skopeo copies
an image into one OCI layout per host (blobs shared between images), umoci unpacks it into
a rootfs, and the image's config (Entrypoint, Cmd, Env, WorkingDir, User) is read here, in
Python, so every engine follows it the same way. Docker parses references with
:mod:`.refs` too, so a name means the same on every engine.
"""
