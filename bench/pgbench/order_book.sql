-- the read path without HTTP: the order book straight from the database
SELECT compute_auction.order_book(100);
