-- The application's database, owned by the role bootstrap.users creates.
CREATE DATABASE shop OWNER shop_owner;
\connect shop
SET ROLE shop_owner;
CREATE TABLE customers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     customer bigint NOT NULL REFERENCES customers, total numeric(12, 2) NOT NULL);
GRANT SELECT ON customers, orders TO shop_reader;
RESET ROLE;
