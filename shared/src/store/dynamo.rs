//! DynamoDB for counters: one item per counter, updated with a single conditional `UpdateItem`, which
//! DynamoDB applies atomically, so concurrent Lambdas can never admit more than the limit between them.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{CounterOutcome, CounterStore};
use crate::usage::UsageRecord;

/// Held usage rows are items `usage-outbox#<request id>` beside the counters.
const OUTBOX_PREFIX: &str = "usage-outbox#";
const ROW_ATTRIBUTE: &str = "row";
/// A held row is kept no longer than usage rows are (30 days) and a day's margin: DynamoDB's TTL
/// removes one that was never delivered, as retention would have.
const OUTBOX_TTL_SECS: i64 = 31 * 86_400;

fn dynamo_error(
    op: &str,
    table: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> anyhow::Error {
    anyhow::anyhow!(
        "DynamoDB {op} on {table}: {}",
        aws_sdk_dynamodb::error::DisplayErrorContext(e)
    )
}

/// The partition key; the table has no sort key.
pub const KEY_ATTRIBUTE: &str = "pk";
/// The table's TTL attribute (configured in template.yaml), unix seconds.
pub const EXPIRY_ATTRIBUTE: &str = "expires_at";
const VALUE_ATTRIBUTE: &str = "v";

pub struct DynamoCounters {
    client: Client,
    table: String,
}

impl DynamoCounters {
    /// A client from the SDK's standard environment (region, credentials, `AWS_ENDPOINT_URL_DYNAMODB`).
    pub async fn from_env(table: &str) -> DynamoCounters {
        let shared = aws_config::load_from_env().await;
        DynamoCounters::new(Client::new(&shared), table)
    }

    pub fn new(client: Client, table: &str) -> DynamoCounters {
        DynamoCounters {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl CounterStore for DynamoCounters {
    async fn add_within(
        &self,
        key: &str,
        amount: u64,
        limit: u64,
        expires_at: i64,
    ) -> anyhow::Result<CounterOutcome> {
        if amount > limit {
            return Ok(CounterOutcome::Refused);
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, AttributeValue::S(key.into()))
            .update_expression("ADD #v :amount SET #exp = if_not_exists(#exp, :exp)")
            // Admit only while the stored value leaves room for `amount`; a missing item is value 0.
            .condition_expression("attribute_not_exists(#v) OR #v <= :ceiling")
            .expression_attribute_names("#v", VALUE_ATTRIBUTE)
            .expression_attribute_names("#exp", EXPIRY_ATTRIBUTE)
            .expression_attribute_values(":amount", AttributeValue::N(amount.to_string()))
            .expression_attribute_values(
                ":ceiling",
                AttributeValue::N((limit - amount).to_string()),
            )
            .expression_attribute_values(":exp", AttributeValue::N(expires_at.to_string()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match result {
            Ok(output) => {
                let value = output
                    .attributes()
                    .and_then(|a| a.get(VALUE_ATTRIBUTE))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse::<i64>().ok())
                    .ok_or_else(|| anyhow::anyhow!("UpdateItem returned no counter value"))?;
                Ok(CounterOutcome::Admitted {
                    value: value.max(0) as u64,
                })
            }
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(CounterOutcome::Refused)
            }
            Err(e) => Err(anyhow::anyhow!(
                "DynamoDB UpdateItem on {}: {}",
                self.table,
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )),
        }
    }

    async fn adjust(&self, key: &str, delta: i64, expires_at: i64) -> anyhow::Result<i64> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, AttributeValue::S(key.into()))
            .update_expression("ADD #v :delta SET #exp = if_not_exists(#exp, :exp)")
            .expression_attribute_names("#v", VALUE_ATTRIBUTE)
            .expression_attribute_names("#exp", EXPIRY_ATTRIBUTE)
            .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(expires_at.to_string()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "DynamoDB UpdateItem on {}: {}",
                    self.table,
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
        output
            .attributes()
            .and_then(|a| a.get(VALUE_ATTRIBUTE))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(|| anyhow::anyhow!("UpdateItem returned no counter value"))
    }

    async fn erase_prefixes(&self, prefixes: &[String], dry_run: bool) -> anyhow::Result<u64> {
        if prefixes.is_empty() {
            return Ok(0);
        }
        // Counters live minutes (TTL), so the table stays small and a filtered scan is cheap.
        let filter = (0..prefixes.len())
            .map(|i| format!("begins_with(#pk, :p{i})"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let mut erased = 0;
        let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
        loop {
            let mut scan = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(&filter)
                .projection_expression("#pk")
                .expression_attribute_names("#pk", KEY_ATTRIBUTE)
                .set_exclusive_start_key(start.take());
            for (i, prefix) in prefixes.iter().enumerate() {
                scan = scan.expression_attribute_values(
                    format!(":p{i}"),
                    AttributeValue::S(prefix.clone()),
                );
            }
            let page = scan.send().await.map_err(|e| {
                anyhow::anyhow!(
                    "DynamoDB Scan on {}: {}",
                    self.table,
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
            for item in page.items() {
                let Some(key) = item.get(KEY_ATTRIBUTE).cloned() else {
                    continue;
                };
                if !dry_run {
                    self.client
                        .delete_item()
                        .table_name(&self.table)
                        .key(KEY_ATTRIBUTE, key)
                        .send()
                        .await
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "DynamoDB DeleteItem on {}: {}",
                                self.table,
                                aws_sdk_dynamodb::error::DisplayErrorContext(e)
                            )
                        })?;
                }
                erased += 1;
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(erased),
            }
        }
    }

    async fn hold_usage(&self, rows: &[UsageRecord]) -> anyhow::Result<()> {
        for row in rows {
            let expires = row
                .timestamp
                .unix_timestamp()
                .saturating_add(OUTBOX_TTL_SECS);
            self.client
                .put_item()
                .table_name(&self.table)
                .item(
                    KEY_ATTRIBUTE,
                    AttributeValue::S(format!("{OUTBOX_PREFIX}{}", row.request_id)),
                )
                .item(
                    ROW_ATTRIBUTE,
                    AttributeValue::S(serde_json::to_string(row)?),
                )
                .item(EXPIRY_ATTRIBUTE, AttributeValue::N(expires.to_string()))
                .send()
                .await
                .map_err(|e| dynamo_error("PutItem", &self.table, e))?;
        }
        Ok(())
    }

    async fn held_usage(&self, limit: usize) -> anyhow::Result<Vec<UsageRecord>> {
        // Counters live minutes (TTL) and held rows exist only after an outage: a filtered scan of a
        // small table, run by the drain, never on a call's path.
        let mut rows = Vec::new();
        let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(#pk, :prefix)")
                .expression_attribute_names("#pk", KEY_ATTRIBUTE)
                .expression_attribute_values(":prefix", AttributeValue::S(OUTBOX_PREFIX.into()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| dynamo_error("Scan", &self.table, e))?;
            for item in page.items() {
                if let Some(text) = item.get(ROW_ATTRIBUTE).and_then(|v| v.as_s().ok()) {
                    rows.push(serde_json::from_str::<UsageRecord>(text)?);
                }
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        rows.sort_by(|a, b| (a.timestamp, &a.request_id).cmp(&(b.timestamp, &b.request_id)));
        rows.truncate(limit);
        Ok(rows)
    }

    async fn release_usage(&self, request_ids: &[String]) -> anyhow::Result<()> {
        for id in request_ids {
            self.client
                .delete_item()
                .table_name(&self.table)
                .key(
                    KEY_ATTRIBUTE,
                    AttributeValue::S(format!("{OUTBOX_PREFIX}{id}")),
                )
                .send()
                .await
                .map_err(|e| dynamo_error("DeleteItem", &self.table, e))?;
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> anyhow::Result<u64> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, AttributeValue::S(key.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "DynamoDB GetItem on {}: {}",
                    self.table,
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
        Ok(output
            .item()
            .and_then(|item| item.get(VALUE_ATTRIBUTE))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0)
            .max(0) as u64)
    }
}
