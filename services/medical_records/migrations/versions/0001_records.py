"""Charts (content encrypted field by field under per-patient data keys), projections of users and
appointments (care relationships), access requests and grants, and the hash-chained access log
that the service's own role can neither update nor delete.

Revision ID: mr_0001
Revises: kit_0002
Create Date: 2026-11-30
"""

from alembic import op

revision = "mr_0001"
down_revision = "kit_0002"
branch_labels = None
depends_on = None

TABLES = """
CREATE TABLE users (
    id uuid PRIMARY KEY,
    role text NOT NULL,
    active boolean NOT NULL,
    user_version bigint NOT NULL
);

CREATE TABLE care_appointments (
    id uuid PRIMARY KEY,
    patient_id uuid NOT NULL,
    doctor_id uuid NOT NULL,
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    status text NOT NULL,
    version bigint NOT NULL
);
CREATE INDEX ix_care_appointments_patient ON care_appointments (patient_id, doctor_id, end_time);
CREATE INDEX ix_care_appointments_patient_start ON care_appointments (patient_id, start_time);

CREATE TABLE data_keys (
    patient_id uuid PRIMARY KEY,
    kek_id text NOT NULL,
    wrapped_key bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    rewrap_time timestamptz
);
CREATE INDEX ix_data_keys_kek_id ON data_keys (kek_id);

CREATE TABLE chart_versions (
    patient_id uuid NOT NULL,
    version integer NOT NULL,
    running_notes bytea NOT NULL,
    allergies bytea NOT NULL,
    author_id uuid NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_id, version)
);

CREATE TABLE encounters (
    id uuid PRIMARY KEY,
    patient_id uuid NOT NULL,
    clinician_id uuid NOT NULL,
    appointment_id uuid,
    encounter_time timestamptz NOT NULL,
    chief_complaint bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_encounters_patient ON encounters (patient_id, create_time DESC, id DESC);

CREATE TABLE notes (
    id uuid PRIMARY KEY,
    patient_id uuid NOT NULL,
    encounter_id uuid REFERENCES encounters (id),
    author_id uuid NOT NULL,
    revision integer NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_notes_patient ON notes (patient_id, create_time DESC, id DESC);

CREATE TABLE note_revisions (
    id uuid PRIMARY KEY,
    note_id uuid NOT NULL REFERENCES notes (id),
    patient_id uuid NOT NULL,
    revision integer NOT NULL,
    author_id uuid NOT NULL,
    subjective bytea NOT NULL,
    objective bytea NOT NULL,
    assessment bytea NOT NULL,
    plan bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    UNIQUE (note_id, revision)
);

CREATE TABLE diagnoses (
    id uuid PRIMARY KEY,
    patient_id uuid NOT NULL,
    encounter_id uuid REFERENCES encounters (id),
    code bytea NOT NULL,
    description bytea NOT NULL,
    status text NOT NULL,
    diagnosed_by uuid NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_diagnoses_patient ON diagnoses (patient_id, create_time DESC, id DESC);

CREATE TABLE prescriptions (
    id uuid PRIMARY KEY,
    patient_id uuid NOT NULL,
    encounter_id uuid REFERENCES encounters (id),
    prescriber_id uuid NOT NULL,
    drug bytea NOT NULL,
    strength bytea NOT NULL,
    dose bytea NOT NULL,
    route bytea NOT NULL,
    frequency bytea NOT NULL,
    duration_days integer NOT NULL,
    status text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_prescriptions_patient ON prescriptions (patient_id, create_time DESC, id DESC);

CREATE TABLE vital_signs (
    id uuid PRIMARY KEY,
    patient_id uuid NOT NULL,
    encounter_id uuid REFERENCES encounters (id),
    recorded_by uuid NOT NULL,
    measure_time timestamptz NOT NULL,
    measurements bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_vital_signs_patient ON vital_signs (patient_id, create_time DESC, id DESC);

CREATE TABLE access_requests (
    id uuid PRIMARY KEY,
    patient_id uuid NOT NULL,
    requester_id uuid NOT NULL,
    reason text NOT NULL,
    status text NOT NULL,
    access_grant_id uuid,
    create_time timestamptz NOT NULL DEFAULT now(),
    decide_time timestamptz
);
CREATE INDEX ix_access_requests_patient ON access_requests (patient_id, create_time DESC, id DESC);
CREATE UNIQUE INDEX ux_access_requests_pending ON access_requests (patient_id, requester_id)
    WHERE status = 'PENDING';

CREATE TABLE access_grants (
    id uuid PRIMARY KEY,
    patient_id uuid NOT NULL,
    grantee_id uuid NOT NULL,
    kind text NOT NULL,
    access_request_id uuid,
    justification text NOT NULL DEFAULT '',
    expire_time timestamptz,
    revoke_time timestamptz,
    revoked_by uuid,
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_access_grants_patient ON access_grants (patient_id, grantee_id);
CREATE INDEX ix_access_grants_patient_time ON access_grants (patient_id, create_time DESC, id DESC);

-- The access log: appended only, each row carrying the hash of the previous one. The chain head
-- (one row) is locked by every append, so concurrent writers cannot fork the chain.
CREATE TABLE access_log (
    sequence bigint PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    patient_id uuid,
    actor_id uuid NOT NULL,
    actor_role text NOT NULL,
    action text NOT NULL,
    basis text NOT NULL,
    access_grant_id uuid,
    method text NOT NULL,
    outcome text NOT NULL,
    reason text NOT NULL,
    request_id text NOT NULL,
    emergency boolean NOT NULL,
    create_time timestamptz NOT NULL,
    previous_hash bytea NOT NULL,
    hash bytea NOT NULL
);
CREATE INDEX ix_access_log_patient ON access_log (patient_id, sequence DESC);
CREATE INDEX ix_access_log_actor ON access_log (actor_id, sequence DESC);

CREATE TABLE access_log_head (
    id smallint PRIMARY KEY CHECK (id = 1),
    sequence bigint NOT NULL,
    hash bytea NOT NULL
);
INSERT INTO access_log_head (id, sequence, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE FUNCTION access_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the access log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER access_log_no_update BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION access_log_is_append_only();
CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION access_log_is_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON access_log FROM PUBLIC, CURRENT_USER;
REVOKE DELETE, TRUNCATE ON access_log_head FROM PUBLIC, CURRENT_USER;
"""


def statements(script: str) -> list[str]:
    """One statement at a time (asyncpg prepares each); semicolons inside $$ bodies stay."""
    found, current, quoted = [], [], False
    for line in script.splitlines():
        if line.strip().startswith("--") and not quoted:
            continue
        current.append(line)
        quoted ^= line.count("$$") % 2 == 1
        if line.rstrip().endswith(";") and not quoted:
            found.append("\n".join(current).strip())
            current = []
    return [s for s in found if s]


def upgrade() -> None:
    for statement in statements(TABLES):
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the access log is never dropped by a migration")
