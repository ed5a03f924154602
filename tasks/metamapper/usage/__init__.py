"""Table usage: which tables a datastore's queries read, how often and by whom.

Metamapper (``app.definitions.tasks.usage``) collects it from Snowflake's query
history; this image collects it from PostgreSQL's ``pg_stat_statements``. Either way the
query texts go through the same steps: the tables each reads (:mod:`.parsing`), counts
per table, user and day (:mod:`.counting`) in ``definitions_table_usage``, and the
per-table scores the web app shows (:mod:`.scoring`) in ``definitions_table``.
"""
