\set n random(1, 1000)
BEGIN;
INSERT INTO pgb.orders (customer, total) VALUES ('customer-' || :n, :n);
COMMIT;
