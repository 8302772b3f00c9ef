"""The limbo supervisor: finds DBOS workflows stuck in limbo and releases them, safely.

It talks to the DBOS system database through asyncpg only (never through DBOS's runtime),
so it works beside any DBOS application of any supported release.
"""
