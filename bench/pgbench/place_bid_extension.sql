-- compute_auction.place_bid (the extension, Rust over SPI)
\set a random(1, 10000)
\set p random(1, 100000)
\set r random(1, 1000000000000000)
SELECT compute_auction.place_bid('acct-' || :a, 'task-' || :client_id || '-' || :r, :p);
