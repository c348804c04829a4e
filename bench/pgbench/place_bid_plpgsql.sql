-- bench_plpgsql.place_bid (bench/plpgsql_place_bid.sql): the same work as one PL/pgSQL function
\set a random(1, 10000)
\set p random(1, 100000)
\set r random(1, 1000000000000000)
SELECT bench_plpgsql.place_bid('acct-' || :a, 'task-' || :client_id || '-' || :r, :p);
