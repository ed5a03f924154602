"""Data-quality checks on Metamapper's metastore (upstream's ``app.checks``).

A check is a SQL query on one datastore and a list of expectations on its result. The
beat sends ``create_executions`` every minute; it creates one execution per enabled check
whose interval has passed since its last one and sends ``execute_check(check_id,
epoch)``; that runs the query, evaluates every expectation, stores the results and sends
``dispatch_alerts(check_id, epoch)``, which alerts each of the check's rules (e-mail,
Slack, PagerDuty) that has not alerted within its own interval.

Modules: :mod:`context` (the SQL template's variables), :mod:`frame` (a query's result),
:mod:`expectations` and :mod:`pass_values` (upstream's kinds, by their class names),
:mod:`query` (the SQL on PostgreSQL or MySQL/MariaDB), :mod:`store` (the ``checks_*``
tables), :mod:`execution` (one execution from start to stored results), :mod:`alerts`
(the messages and their delivery), :mod:`tasks` (the Celery tasks, upstream's names) and
:mod:`define` (checks, rules and integrations written the web app's way).
"""
