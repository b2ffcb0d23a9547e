-- stockalert MySQL/MariaDB schema.
--
-- Compiled into stockalertd and applied on every connect, statement by
-- statement, so every statement must be idempotent (CREATE ... IF NOT EXISTS)
-- and the daemon never runs against a schema from another version.
--
-- The daemon splits this file at semicolons that end a line, without parsing
-- SQL: never put a semicolon inside a string or a comment.

-- Written directly by the shop's catalog sync: these columns are a contract
-- (conf/README.md, Redis and MySQL layout), do not rename or retype them.
CREATE TABLE IF NOT EXISTS products (
	id BIGINT NOT NULL PRIMARY KEY,
	sku VARCHAR(64) NOT NULL,
	name VARCHAR(255) NOT NULL,
	stock INT NOT NULL DEFAULT 0,
	low_stock_threshold INT NOT NULL DEFAULT 5,
	updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
		ON UPDATE CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The durable copy of the live Redis index. A DELETE clears `active` rather
-- than removing the row, and every write bumps `version`: Redis applies a
-- change only if its version is newer than what it holds, so concurrent
-- writers on several instances converge on what MySQL says. No foreign key to products: the
-- catalog sync may delete and rewrite products at any time. user_id is the
-- JWT subject, compared byte for byte (binary collation). by_product serves
-- the index rebuild and fair release, which read subscribers oldest first.
CREATE TABLE IF NOT EXISTS subscriptions (
	user_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
	product_id BIGINT NOT NULL,
	kinds VARCHAR(64) NOT NULL DEFAULT 'back_in_stock,low_stock,sold_out',
	threshold INT NULL,
	created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	active TINYINT NOT NULL DEFAULT 1,
	version BIGINT NOT NULL DEFAULT 1,
	PRIMARY KEY (user_id, product_id),
	KEY by_product (product_id, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Columns added after the first release: databases created by an older
-- daemon gain them here (MariaDB's ADD COLUMN IF NOT EXISTS keeps this
-- idempotent).
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS active TINYINT NOT NULL DEFAULT 1;
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 1;
