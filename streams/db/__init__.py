"""PostgreSQL access: connections, migrations and the named queries in ``queries.sql``."""
