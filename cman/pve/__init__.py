"""Proxmox VE: provisioning LXC containers that host Docker, through PVE's HTTP API.

PVE is not a cman backend (no ``ps``/``run`` on it): it is a place cman provisions into.
:mod:`.schema` applies PVE's published parameter schema; :mod:`.plan` turns the command
line into the create request, the ``.conf`` and the ``pct`` line; :mod:`.profile` holds the
docker-host profile's PVE settings; :mod:`.auth` the credentials; :mod:`.api` the proxmoxer
client and its error boundary; :mod:`.node` the SSH steps on the node; :mod:`.provision` the
verb. Everything here was checked only against the published schema and a stand-in server
(``tests/pve_standin.py``), never against a running PVE.
"""
