\set n random(1, 1000)
BEGIN;
INSERT INTO pgb.orders (customer, total) VALUES ('customer-' || :n, :n);
WITH inserted AS (INSERT INTO pgb.o (message_id, topic, msg_key, payload, headers, available_at)
 SELECT m.message_id, m.topic, m.msg_key, m.payload, m.headers, GREATEST(now(), m.not_before, (SELECT p.available_at FROM pgb.o p WHERE p.status = 0 AND p.msg_key = m.msg_key ORDER BY p.id DESC LIMIT 1))
 FROM unnest(ARRAY[gen_random_uuid()], ARRAY['bench'], ARRAY['customer-' || :n], ARRAY[convert_to(repeat('x', 256), 'UTF8')], ARRAY['{}'::jsonb], ARRAY[NULL::timestamptz]) WITH ORDINALITY AS m(message_id, topic, msg_key, payload, headers, not_before, ord)
 WHERE NOT EXISTS (SELECT 1 FROM pgb.o d WHERE d.message_id = m.message_id) ORDER BY m.ord RETURNING 1) SELECT count(*) FROM inserted;
COMMIT;
