-- the clearing section's intake (issue 21's rules of measurement): place_bid on the clearing
-- database's 100,000 accounts while rounds clear every second, 1-day TTLs like the book's
\set a random(1, 100000)
\set p random(1, 1000000)
\set r random(1, 1000000000000000)
SELECT compute_auction.place_bid('ca-' || :a, 'intake-' || :client_id || '-' || :r, :p, NULL, now() + interval '1 day');
