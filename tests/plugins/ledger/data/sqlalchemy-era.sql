-- An SQLite ledger and key table as modelbroker wrote them through SQLAlchemy (git 69c1c8c),
-- dumped with sqlite3's iterdump: later versions must read, extend and sum these rows.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE schema_version (
	version INTEGER NOT NULL, 
	description TEXT NOT NULL, 
	applied_at DATETIME NOT NULL, 
	PRIMARY KEY (version)
);
INSERT INTO schema_version VALUES(1,'create the attempts table','2026-11-27 21:15:08.280877');
CREATE TABLE attempts (
	id INTEGER NOT NULL, 
	request_id TEXT NOT NULL, 
	attempt INTEGER NOT NULL, 
	time DATETIME NOT NULL, 
	route TEXT, 
	client TEXT, 
	provider TEXT, 
	provider_id TEXT, 
	model TEXT, 
	model_used TEXT, 
	success BOOLEAN NOT NULL, 
	outcome TEXT NOT NULL, 
	error_kind TEXT, 
	status INTEGER, 
	error TEXT, 
	prompt_tokens INTEGER DEFAULT '0' NOT NULL, 
	completion_tokens INTEGER DEFAULT '0' NOT NULL, 
	total_tokens INTEGER DEFAULT '0' NOT NULL, 
	cached_tokens INTEGER, 
	reasoning_tokens INTEGER, 
	tokens_estimated BOOLEAN DEFAULT 0 NOT NULL, 
	cost DOUBLE DEFAULT '0' NOT NULL, 
	latency_ms DOUBLE, 
	overhead_ms DOUBLE, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_attempts_request_attempt UNIQUE (request_id, attempt)
);
INSERT INTO attempts VALUES(1,'old-0',1,'2025-06-01 12:00:00.123456',NULL,'alice','a','a/m','m',NULL,1,'ok',NULL,NULL,NULL,10,5,15,NULL,NULL,0,0.25,100.0,NULL);
INSERT INTO attempts VALUES(2,'old-1',1,'2025-06-01 12:01:00.123456',NULL,'alice','a','a/m','m',NULL,0,'failed',NULL,NULL,NULL,10,5,15,NULL,NULL,0,0.0,50.0,NULL);
INSERT INTO attempts VALUES(3,'old-2',1,'2025-06-01 12:02:00.123456',NULL,NULL,'b','b/m','m',NULL,1,'ok',NULL,NULL,NULL,10,5,15,NULL,NULL,0,0.5,300.0,NULL);
CREATE TABLE keys_schema_version (
	version INTEGER NOT NULL, 
	description TEXT NOT NULL, 
	applied_at DATETIME NOT NULL, 
	PRIMARY KEY (version)
);
INSERT INTO keys_schema_version VALUES(1,'create the client_keys table','2026-11-27 21:15:08.292396');
CREATE TABLE client_keys (
	id INTEGER NOT NULL, 
	name TEXT NOT NULL, 
	prefix TEXT NOT NULL, 
	key_hash TEXT NOT NULL, 
	budget_daily DOUBLE, 
	budget_monthly DOUBLE, 
	rpm INTEGER, 
	tpm INTEGER, 
	models TEXT, 
	created_at DATETIME NOT NULL, 
	revoked_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (key_hash)
);
INSERT INTO client_keys VALUES(1,'alice','mb-abc','hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh',1.0,NULL,NULL,NULL,'["m"]','2025-06-01 00:00:00.000000',NULL);
CREATE INDEX ix_attempts_provider_time ON attempts (provider, time);
CREATE INDEX ix_attempts_time ON attempts (time);
CREATE UNIQUE INDEX uq_client_keys_active_name ON client_keys (name) WHERE revoked_at IS NULL;
COMMIT;
