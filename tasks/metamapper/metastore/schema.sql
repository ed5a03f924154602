-- Metamapper 1.0's metastore: the PostgreSQL tables the worker's tasks read and write,
-- and the tables those reference.
--
-- Written from the facts recorded in Metamapper 1.0's Django migrations (table and column
-- names, types, nullability, keys and unique constraints), the way Django 3.2 lays them
-- out on PostgreSQL:
--
-- * AutoField is `serial`, DateTimeField `timestamptz` (USE_TZ), DurationField `interval`,
--   JSONField `jsonb`, ArrayField `varchar(n)[]`, an encrypted field `bytea` (a Fernet
--   token), PositiveIntegerField an `integer` with a `>= 0` check.
-- * Foreign keys are DEFERRABLE INITIALLY DEFERRED and have no ON DELETE action: Django
--   performs cascades itself, so whoever deletes (a hard delete) deletes children first.
-- * Django keeps field defaults in the application, not in the database: a column's
--   default appears here as a comment (`-- app default: ...`), and every INSERT must give
--   a value for every NOT NULL column, exactly as against a database the web app created.
--
-- For an installation without Metamapper's web app only: `metamapper metastore init`
-- applies this file to an empty database. Where the web app runs, its migrations own
-- the schema and this file is not applied.

CREATE TABLE django_content_type (
    id serial PRIMARY KEY,
    app_label varchar(100) NOT NULL,
    model varchar(100) NOT NULL,
    CONSTRAINT django_content_type_app_label_model_key UNIQUE (app_label, model)
);

-- authentication

CREATE TABLE auth_users (
    id serial PRIMARY KEY,
    password varchar(128) NOT NULL,
    last_login timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    fname varchar(100) NOT NULL,
    lname varchar(100) NOT NULL,
    email varchar(254) NOT NULL UNIQUE,
    sub varchar(128) UNIQUE,
    sso_access_token bytea,                      -- encrypted; app default: a new uuid4
    sso_access_token_issued_at timestamptz,
    google_oauth2_token bytea,                   -- encrypted
    google_oauth2_token_issued_at timestamptz,
    github_oauth2_token bytea,                   -- encrypted
    github_oauth2_token_issued_at timestamptz
);

CREATE TABLE auth_workspaces (
    deleted_at timestamptz,
    id varchar(32) PRIMARY KEY,                  -- app default: uuid4().hex
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    slug varchar(50) NOT NULL UNIQUE,
    name varchar(255) NOT NULL,
    ssh_private_key bytea NOT NULL,              -- encrypted
    ssh_public_key text NOT NULL,
    beacon_consent boolean NOT NULL,             -- app default: false
    creator_id integer NOT NULL
        REFERENCES auth_users (id) DEFERRABLE INITIALLY DEFERRED,
    active_sso_id varchar(40)                    -- references sso_connections, added below
);

-- Django's auth.Group, widened by Metamapper to belong to a workspace.
CREATE TABLE auth_group (
    id serial PRIMARY KEY,
    name varchar(150) NOT NULL,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    description varchar(180),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT auth_group_name_key UNIQUE (name, workspace_id)
);

-- A membership names its user by e-mail (column "email"), with no constraint.
CREATE TABLE auth_memberships (
    id serial PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    permissions varchar(10) NOT NULL,            -- OWNER, MEMBER, READONLY; app default: MEMBER
    email varchar(254) NOT NULL,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT auth_memberships_workspace_id_email_key UNIQUE (workspace_id, email)
);
CREATE INDEX auth_memberships_email ON auth_memberships (email);

-- sso

CREATE TABLE sso_connections (
    id varchar(40) PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    is_enabled boolean NOT NULL,                 -- app default: false
    entity_id varchar(128) NOT NULL,
    sso_url varchar(512),
    x509cert bytea,                              -- encrypted
    extras jsonb NOT NULL,                       -- app default: {}
    provider varchar(30) NOT NULL,               -- GITHUB, GOOGLE, GENERIC; app default: GENERIC
    default_permissions varchar(10) NOT NULL,    -- app default: READONLY
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED
);

ALTER TABLE auth_workspaces ADD CONSTRAINT auth_workspaces_active_sso_id_fk
    FOREIGN KEY (active_sso_id) REFERENCES sso_connections (id) DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE sso_domains (
    id varchar(40) PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    domain varchar(255) NOT NULL UNIQUE,
    attempts integer NOT NULL CHECK (attempts >= 0),  -- app default: 0
    last_attempted_at timestamptz,
    verified_at timestamptz,
    verification_token varchar(100) NOT NULL,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE sso_identities (
    id varchar(40) PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    ident varchar(128) NOT NULL,
    metadata jsonb NOT NULL,                     -- app default: {}
    last_verified_at timestamptz NOT NULL,
    last_synced_at timestamptz NOT NULL,
    provider_id varchar(40) NOT NULL
        REFERENCES sso_connections (id) DEFERRABLE INITIALLY DEFERRED,
    user_id integer NOT NULL
        REFERENCES auth_users (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT sso_identities_provider_id_ident_key UNIQUE (provider_id, ident)
);

-- definitions

CREATE TABLE definitions_datastore (
    id varchar(40) PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    custom_properties jsonb NOT NULL,            -- app default: {}
    name varchar(255) NOT NULL,
    slug varchar(300) NOT NULL UNIQUE,
    tags varchar(32)[] NOT NULL,                 -- app default: []
    is_enabled boolean NOT NULL,                 -- app default: true
    version varchar(255),
    -- postgresql, sqlserver, mysql, redshift, snowflake, oracle, bigquery, athena, glue,
    -- azure_sql, azure_dwh, hive
    engine varchar(16) NOT NULL,
    host varchar(255) NOT NULL,
    username varchar(128) NOT NULL,
    password bytea NOT NULL,                     -- encrypted (a Fernet token)
    database varchar(128) NOT NULL,
    port integer NOT NULL CHECK (port >= 0),     -- the app allows at most 65535
    extras jsonb NOT NULL,                       -- app default: {}
    ssh_enabled boolean NOT NULL,                -- app default: false
    ssh_host varchar(128),
    ssh_port integer CHECK (ssh_port >= 0),
    ssh_user varchar(128),
    short_desc varchar(140),
    disabled_datastore_properties varchar(20)[] NOT NULL,  -- app default: []
    disabled_table_properties varchar(20)[] NOT NULL,      -- app default: []
    object_permissions_enabled boolean NOT NULL, -- app default: true
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    incident_contacts varchar(254)[] NOT NULL,   -- e-mail addresses; app default: []
    interval interval NOT NULL,                  -- app default: 1 day
    usage_last_synced_at timestamptz,
    CONSTRAINT definitions_datastore_workspace_id_name_key UNIQUE (workspace_id, name)
);
CREATE INDEX definitions_datastore_workspace_id ON definitions_datastore (workspace_id);

CREATE TABLE definitions_schema (
    id serial PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    run_id varchar(255),
    object_id varchar(128) NOT NULL UNIQUE,
    object_ref varchar(128),
    name varchar(256) NOT NULL,
    tags varchar(32)[] NOT NULL,                 -- app default: []
    datastore_id varchar(40) NOT NULL
        REFERENCES definitions_datastore (id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT definitions_schema_datastore_id_name_deleted_at_key
        UNIQUE (datastore_id, name, deleted_at),
    CONSTRAINT definitions_schema_datastore_id_object_id_key UNIQUE (datastore_id, object_id)
);
CREATE INDEX definitions_schema_object_ref ON definitions_schema (object_ref);
CREATE INDEX definitions_schema_name ON definitions_schema (name);
CREATE INDEX definitions_schema_datastore_id ON definitions_schema (datastore_id);

CREATE TABLE definitions_table (
    id serial PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    custom_properties jsonb NOT NULL,            -- app default: {}
    run_id varchar(255),
    object_id varchar(128) NOT NULL UNIQUE,
    object_ref varchar(128),
    name varchar(256) NOT NULL,
    tags varchar(32)[] NOT NULL,                 -- app default: []
    kind varchar(100) NOT NULL,
    db_comment text,
    short_desc text,
    properties jsonb NOT NULL,                   -- app default: {}
    readme text,
    schema_id varchar(128) NOT NULL
        REFERENCES definitions_schema (object_id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    usage_score integer NOT NULL,                -- app default: 0
    usage_total_queries integer,
    usage_total_users integer,
    usage_window integer,
    CONSTRAINT definitions_table_schema_id_name_deleted_at_key
        UNIQUE (schema_id, name, deleted_at),
    CONSTRAINT definitions_table_schema_id_object_id_key UNIQUE (schema_id, object_id)
);
CREATE INDEX definitions_table_object_ref ON definitions_table (object_ref);
CREATE INDEX definitions_table_name ON definitions_table (name);
CREATE INDEX definitions_table_schema_id ON definitions_table (schema_id);

CREATE TABLE definitions_column (
    id serial PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    run_id varchar(255),
    object_id varchar(128) NOT NULL UNIQUE,
    object_ref varchar(128),
    name varchar(256) NOT NULL,
    ordinal_position integer NOT NULL,           -- the app requires at least 1
    data_type varchar(255) NOT NULL,
    max_length integer,
    numeric_scale integer,
    is_primary boolean NOT NULL,                 -- app default: false
    is_nullable boolean NOT NULL,
    default_value varchar(255),
    db_comment text,
    short_desc text,
    readme text,
    tags varchar(32)[] NOT NULL,                 -- app default: []
    table_id varchar(128) NOT NULL
        REFERENCES definitions_table (object_id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT definitions_column_table_id_name_deleted_at_key
        UNIQUE (table_id, name, deleted_at),
    CONSTRAINT definitions_column_table_id_object_id_key UNIQUE (table_id, object_id)
);
CREATE INDEX definitions_column_object_ref ON definitions_column (object_ref);
CREATE INDEX definitions_column_name ON definitions_column (name);
CREATE INDEX definitions_column_table_id ON definitions_column (table_id);

CREATE TABLE definitions_assetowner (
    id serial PRIMARY KEY,
    "order" integer NOT NULL CHECK ("order" >= 0),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    object_id integer NOT NULL,
    owner_id integer NOT NULL,
    content_type_id integer NOT NULL
        REFERENCES django_content_type (id) DEFERRABLE INITIALLY DEFERRED,
    owner_type_id integer NOT NULL
        REFERENCES django_content_type (id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    classification varchar(12) NOT NULL,         -- BUSINESS, TECHNICAL; app default: BUSINESS
    CONSTRAINT definitions_assetowner_owner_key
        UNIQUE (workspace_id, object_id, content_type_id, owner_id, owner_type_id)
);
CREATE INDEX definitions_assetowner_order ON definitions_assetowner ("order");

-- Per day, datastore, schema, table and database user: how many queries read the table.
CREATE TABLE definitions_table_usage (
    id serial PRIMARY KEY,
    execution_date date NOT NULL,
    db_schema varchar(256) NOT NULL,
    db_table varchar(256) NOT NULL,
    db_user varchar(256) NOT NULL,
    query_count integer NOT NULL,                -- app default: 0
    datastore_id varchar(40) NOT NULL
        REFERENCES definitions_datastore (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT definitions_table_usage_key
        UNIQUE (execution_date, datastore_id, db_schema, db_table, db_user)
);
CREATE INDEX definitions_table_usage_table
    ON definitions_table_usage (datastore_id, db_schema, db_table);

CREATE TABLE definitions_table_usage_exists (
    id varchar(32) PRIMARY KEY,
    created_at timestamptz NOT NULL
);

-- revisioner

CREATE TABLE revisioner_run (
    id varchar(32) PRIMARY KEY,                  -- app default: uuid4().hex
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    datastore_id varchar(40) NOT NULL
        REFERENCES definitions_datastore (id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    fails_count integer NOT NULL,                -- app default: 0
    tasks_count integer NOT NULL                 -- app default: 0
);
CREATE INDEX revisioner_run_datastore_id ON revisioner_run (datastore_id);
CREATE INDEX revisioner_run_workspace_id ON revisioner_run (workspace_id);

CREATE TABLE revisioner_runtask (
    id serial PRIMARY KEY,
    meta_task_id varchar(512),
    status varchar(10) NOT NULL,                 -- SUCCESS, FAILURE, PENDING, REVOKED; app default: PENDING
    error text,
    started_at timestamptz,
    finished_at timestamptz,
    path varchar(512) NOT NULL UNIQUE,
    run_id varchar(32) NOT NULL
        REFERENCES revisioner_run (id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX revisioner_runtask_run_id ON revisioner_runtask (run_id);

-- checks

CREATE TABLE checks_query (
    id serial PRIMARY KEY,
    created_at timestamptz NOT NULL,
    key varchar(32) NOT NULL,
    sql_text text NOT NULL,
    columns varchar(255)[] NOT NULL,             -- app default: []
    datastore_id varchar(40) NOT NULL
        REFERENCES definitions_datastore (id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT checks_query_key_workspace_id_key UNIQUE (key, workspace_id)
);
CREATE INDEX checks_query_key ON checks_query (key);

CREATE TABLE checks (
    id varchar(40) PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    name varchar(255) NOT NULL,
    tags varchar(32)[] NOT NULL,                 -- app default: []
    is_enabled boolean NOT NULL,                 -- app default: true
    short_desc varchar(255),
    interval interval NOT NULL,                  -- app default: 1 hour
    creator_id integer NOT NULL
        REFERENCES auth_users (id) DEFERRABLE INITIALLY DEFERRED,
    datastore_id varchar(40) NOT NULL
        REFERENCES definitions_datastore (id) DEFERRABLE INITIALLY DEFERRED,
    last_execution_id integer,                   -- references checks_execution, added below
    query_id integer NOT NULL
        REFERENCES checks_query (id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE checks_execution (
    id serial PRIMARY KEY,
    epoch bigint NOT NULL,                       -- app default: now, in whole Unix seconds
    tasks_count integer NOT NULL,                -- app default: 0
    fails_count integer NOT NULL,                -- app default: 0
    error text,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    job_id varchar(40) NOT NULL
        REFERENCES checks (id) DEFERRABLE INITIALLY DEFERRED,
    query_id integer NOT NULL
        REFERENCES checks_query (id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT checks_execution_job_id_epoch_key UNIQUE (job_id, epoch)
);

ALTER TABLE checks ADD CONSTRAINT checks_last_execution_id_fk
    FOREIGN KEY (last_execution_id) REFERENCES checks_execution (id)
    DEFERRABLE INITIALLY DEFERRED;

-- handler_class and pass_value_class name the expectation's and the pass value's
-- implementations; *_input are their arguments.
CREATE TABLE checks_expectation (
    id serial PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    deleted_at timestamptz,
    handler_class text NOT NULL,
    handler_input jsonb NOT NULL,                -- app default: {}
    pass_value_class text NOT NULL,
    pass_value_input jsonb NOT NULL,             -- app default: {}
    job_id varchar(40) NOT NULL
        REFERENCES checks (id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX checks_expectation_job_id ON checks_expectation (job_id);

CREATE TABLE checks_expectationresult (
    id serial PRIMARY KEY,
    epoch bigint NOT NULL,                       -- app default: now, in whole Unix seconds
    passed boolean NOT NULL,
    expected_value bigint,
    observed_value bigint,
    execution_id integer NOT NULL
        REFERENCES checks_execution (id) DEFERRABLE INITIALLY DEFERRED,
    expectation_id integer NOT NULL
        REFERENCES checks_expectation (id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX checks_expectationresult_execution_id ON checks_expectationresult (execution_id);
CREATE INDEX checks_expectationresult_expectation_id
    ON checks_expectationresult (expectation_id);

CREATE TABLE checks_alertrule (
    id serial PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    name varchar(255) NOT NULL,
    channel varchar(15) NOT NULL,                -- EMAIL, PAGERDUTY, SLACK
    channel_config jsonb NOT NULL,               -- app default: {}
    job_id varchar(40) NOT NULL
        REFERENCES checks (id) DEFERRABLE INITIALLY DEFERRED,
    last_failure_id integer
        REFERENCES checks_execution (id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    interval interval NOT NULL                   -- app default: 1 hour
);
CREATE INDEX checks_alertrule_job_id ON checks_alertrule (job_id);

-- integrations: a workspace's Slack and PagerDuty (the checks' alert channels).
CREATE TABLE integration_config (
    id varchar(40) PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    integration varchar(32) NOT NULL,            -- PAGERDUTY, SLACK
    displayable varchar(140) NOT NULL,
    auth bytea NOT NULL,                         -- encrypted: Slack's token, PagerDuty's key
    meta jsonb NOT NULL,                         -- app default: {}
    user_id integer NOT NULL
        REFERENCES auth_users (id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT integration_config_workspace_id_integration_displayable_key
        UNIQUE (workspace_id, integration, displayable)
);

-- healthchecks: the beat's heartbeat is one row, replaced on every beat.

CREATE TABLE healthchecks_heartbeat (
    ts timestamptz PRIMARY KEY
);

-- The web app's cache table (Django's database cache, named django_db_cache).
CREATE TABLE django_db_cache (
    cache_key varchar(255) PRIMARY KEY,
    value text NOT NULL,
    expires timestamptz NOT NULL
);
CREATE INDEX django_db_cache_expires ON django_db_cache (expires);

-- audit

CREATE TABLE audit_activity (
    id serial PRIMARY KEY,
    target_object_id varchar(255),
    action_object_object_id varchar(255),
    verb varchar(255) NOT NULL,
    extras jsonb NOT NULL,                       -- app default: {}
    old_values jsonb NOT NULL,                   -- app default: {}
    new_values jsonb NOT NULL,                   -- app default: {}
    timestamp timestamptz NOT NULL,              -- app default: now
    action_object_content_type_id integer
        REFERENCES django_content_type (id) DEFERRABLE INITIALLY DEFERRED,
    actor_id integer NOT NULL
        REFERENCES auth_users (id) DEFERRABLE INITIALLY DEFERRED,
    target_content_type_id integer
        REFERENCES django_content_type (id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX audit_activity_target_object_id ON audit_activity (target_object_id);
CREATE INDEX audit_activity_action_object_object_id ON audit_activity (action_object_object_id);
CREATE INDEX audit_activity_verb ON audit_activity (verb);
CREATE INDEX audit_activity_timestamp ON audit_activity (timestamp);

-- comments and custom fields (counted by the usage beacon)

CREATE TABLE comments (
    id varchar(40) PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    num_vote_up integer NOT NULL CHECK (num_vote_up >= 0),      -- app default: 0
    num_vote_down integer NOT NULL CHECK (num_vote_down >= 0),  -- app default: 0
    object_id integer NOT NULL,
    html text NOT NULL,
    text text NOT NULL,
    pinned_at timestamptz,
    author_id integer NOT NULL
        REFERENCES auth_users (id) DEFERRABLE INITIALLY DEFERRED,
    content_type_id integer NOT NULL
        REFERENCES django_content_type (id) DEFERRABLE INITIALLY DEFERRED,
    parent_id varchar(40)
        REFERENCES comments (id) DEFERRABLE INITIALLY DEFERRED,
    pinned_by_id integer
        REFERENCES auth_users (id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX comments_content_type_id_object_id ON comments (content_type_id, object_id);

CREATE TABLE customfields (
    id varchar(40) PRIMARY KEY,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    field_name varchar(30) NOT NULL,
    field_type varchar(30) NOT NULL,             -- USER, TEXT, ENUM, GROUP, MULTI
    validators jsonb NOT NULL,                   -- app default: {}
    short_desc varchar(50),
    content_type_id integer NOT NULL
        REFERENCES django_content_type (id) DEFERRABLE INITIALLY DEFERRED,
    workspace_id varchar(32) NOT NULL
        REFERENCES auth_workspaces (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT customfields_workspace_content_type_field_name_key
        UNIQUE (workspace_id, content_type_id, field_name)
);
