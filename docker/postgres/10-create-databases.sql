-- Run once by the postgres image's entrypoint, on the first start with an empty data volume
-- (files in /docker-entrypoint-initdb.d are skipped when the database cluster already exists).
-- The two databases scripts/stack.py creates on the native stack (db_prefix ""): one for the
-- MLflow tracking store, one for the Prefect server. Both are owned by POSTGRES_USER, which
-- runs this script; MLflow and Prefect create their tables (migrations) at start.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
