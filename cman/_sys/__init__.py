"""System plumbing that every layer of cman uses, and nothing cman-specific.

- :mod:`.proc`: subprocesses, argv lists only, a timeout on every call;
- :mod:`.unixhttp`: HTTP/1.x over a unix socket (or any dialed stream), without ``requests``;
- :mod:`.urlget`: plain HTTP(S) GETs with urllib (no proxy for loopback, TLS verified or pinned);
- :mod:`.files`: atomic writes, JSON records, ``flock`` locks, paths opened beneath a root;
- :mod:`.times`: engine timestamps into ``datetime``, and "3 minutes" for humans;
- :mod:`.tty`: terminal raw mode, window size, and the one byte pump between a terminal and a stream;
- :mod:`.retry`: bounded retries with backoff, for idempotent calls only.

The only cman module these may import is :mod:`cman.errors` (``tests/unit/test_layers.py``).
"""
