-- experiment: bench_plpgsql.place_bid_fused (bench/plpgsql_place_bid_fused.sql), two statements per bid
\set a random(1, 10000)
\set p random(1, 100000)
\set r random(1, 1000000000000000)
SELECT bench_plpgsql.place_bid_fused('acct-' || :a, 'task-' || :client_id || '-' || :r, :p);
