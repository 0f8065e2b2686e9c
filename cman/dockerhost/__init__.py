"""Docker inside system containers: ``cman provision docker-host`` (LXC, LXD), ``cman provision
registry-mirror`` and ``cman doctor docker-host``. Proxmox VE's path is :mod:`cman.pve`.

- :mod:`.spec`: what is asked for, validated before any engine call;
- :mod:`.faults`: what goes wrong, by name, judged from what the guest prints (pure);
- :mod:`.guest`: commands in the container (constant argv, data on stdin);
- :mod:`.steps`: checked, idempotent steps and their report;
- :mod:`.provision`: the docker-host steps, and the doctor's looks.
"""
