//! Property tests of the refund notices (no database needed): however many bids, whatever
//! their ids, amounts and account name, every part is shorter than NOTIFY's limit, holds at
//! most 500 ids, and the parts together list every bid once, in order, with their tokens.

use compute_auction_core::book::BidStatus;
use compute_auction_core::notices::{bids_refunded, PAYLOAD_LIMIT_BYTES, REFUND_IDS_PER_NOTICE};
use proptest::prelude::*;
use serde_json::Value;

fn bids() -> impl Strategy<Value = Vec<(i64, i64)>> {
    prop::collection::vec(
        (prop_oneof![1i64..1000, (i64::MAX - 10_000)..i64::MAX], prop_oneof![1i64..100, 1i64..i64::MAX]),
        0..1600,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parts_cover_every_bid_within_the_limits(
        bids in bids(),
        account in prop_oneof![Just("a".to_string()), "\\PC{1,256}", "[\\x00-\\x1f\"\\\\]{1,256}"],
    ) {
        let parts = bids_refunded(&account, BidStatus::Expired, &bids);
        let mut ids = Vec::new();
        let mut tokens: i128 = 0;
        for (n, p) in parts.iter().enumerate() {
            prop_assert!(p.len() < PAYLOAD_LIMIT_BYTES, "{} bytes", p.len());
            let v: Value = serde_json::from_str(p).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(v["account_id"].as_str(), Some(account.as_str()));
            prop_assert_eq!(v["part"].as_u64(), Some(n as u64 + 1));
            prop_assert_eq!(v["parts"].as_u64(), Some(parts.len() as u64));
            let part: Vec<i64> = v["bid_ids"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
            prop_assert!(!part.is_empty() && part.len() <= REFUND_IDS_PER_NOTICE);
            tokens += i128::from(v["tokens_refunded"].as_i64().unwrap_or(-1));
            ids.extend(part);
        }
        prop_assert_eq!(ids, bids.iter().map(|b| b.0).collect::<Vec<_>>());
        prop_assert_eq!(tokens, bids.iter().map(|b| i128::from(b.1)).sum::<i128>());
    }
}
