\set n random(1, 1000)
BEGIN;
INSERT INTO pgb.orders (customer, total) VALUES ('customer-' || :n, :n);
INSERT INTO pgb.o (message_id, topic, msg_key, payload, headers, available_at) VALUES (gen_random_uuid(), 'bench', 'customer-' || :n, convert_to(repeat('x', 256), 'UTF8'), '{}', now());
COMMIT;
