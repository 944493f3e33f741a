"""The optional built-in users (the ``[users]`` extra): accounts in a SQL database, Argon2 passwords, HS256 tokens.

:class:`~tidings.users.service.BuiltinUsers` is what :class:`~tidings.Tidings` uses when the host passes no
``authenticate``: ``POST /auth/token`` (with failed-login limits), ``POST /auth/logout``, the account
administration API under ``/api/admin/users``, and revocation (a password change, deactivation, deletion or role
change closes the user's open sockets on every node). The tables are the Alembic branch ``users``.
"""
