#!/usr/bin/env python3
"""Rebuilds the Stripe webhook fixtures in this directory, deterministically.

Each fixture is an API Gateway HTTP API (payload 2.0) event for `POST /webhooks/stripe` whose body is a
Stripe event (API version 2026-09-30.endive) signed the way Stripe signs deliveries:
`Stripe-Signature: t=<T>,v1=<hex HMAC-SHA256(secret, "<T>.<body>")>`.

    python3 events/stripe-webhook/generate.py                # rewrite the committed fixtures
    python3 events/stripe-webhook/generate.py --at "$(date +%s)" --out /tmp/stripe-events
                                                             # fresh ones, e.g. for `sam local invoke`

Standard library only. The output depends on nothing but this file and the arguments.
"""

import argparse
import hashlib
import hmac
import json
import os
import time

SECRET = "whsec_qnp_fixture_secret"
SIGNED_AT = 1795000000  # T: the signature's timestamp and the delivery time (2026-11-18T11:06:40Z)
API_VERSION = "2026-09-30.endive"
DAY = 86400

ACCOUNT = "acct_fixture0000000000000"  # the QNP account (metadata.account_id, client_reference_id)
CUSTOMER = "cus_fixture00000000"
SUBSCRIPTION = "sub_fixture00000000"
ITEM = "si_fixture00000000"
PRICE = "price_fixture_pro"
PRODUCT = "prod_fixture_pro"
PAYMENT_METHOD = "pm_fixture00000000"
SESSION = "cs_test_fixture0000000000000000"
FIRST_INVOICE = "in_fixture00000001"
RENEWAL_INVOICE = "in_fixture00000002"
# The Stripe (platform) account in Stripe-hosted invoice URLs; not a QNP account.
STRIPE_ACCOUNT = "acct_1QnpFixturePlatfrm"
PUBLIC_URL = "https://qnp.example.com"


def timeline(t):
    """Object and event times relative to T, in lifecycle order (all at or before T)."""
    return {
        "session_opened": t - 600,
        "subscription_start": t - 61,  # subscription and its first invoice, created during checkout
        "period_end": t + 30 * DAY,  # still in the future at T
        "checkout_completed": t - 60,
        "subscription_created": t - 59,
        "subscription_updated": t - 30,  # cancellation at period end scheduled
        "invoice_paid": t - 20,
        "renewal_invoice_created": t - 11,
        "invoice_payment_failed": t - 10,
        "subscription_deleted": t - 5,  # canceled now, before the period ends
    }


def price(tl):
    return {
        "id": PRICE, "object": "price", "active": True, "billing_scheme": "per_unit",
        "created": tl["session_opened"] - 30 * DAY, "currency": "usd", "custom_unit_amount": None,
        "livemode": False, "lookup_key": "qnp_pro_monthly", "metadata": {}, "nickname": "Pro monthly",
        "product": PRODUCT,
        "recurring": {"interval": "month", "interval_count": 1, "meter": None,
                      "trial_period_days": None, "usage_type": "licensed"},
        "tax_behavior": "unspecified", "tiers_mode": None, "transform_quantity": None,
        "type": "recurring", "unit_amount": 2000, "unit_amount_decimal": "2000",
    }


def plan(tl):
    return {
        "id": PRICE, "object": "plan", "active": True, "amount": 2000, "amount_decimal": "2000",
        "billing_scheme": "per_unit", "created": tl["session_opened"] - 30 * DAY, "currency": "usd",
        "interval": "month", "interval_count": 1, "livemode": False, "metadata": {}, "meter": None,
        "nickname": "Pro monthly", "product": PRODUCT, "tiers_mode": None, "transform_usage": None,
        "trial_period_days": None, "usage_type": "licensed",
    }


def subscription(tl, status="active", latest_invoice=FIRST_INVOICE, cancel_at_period_end=False,
                 canceled_at=None, ended_at=None):
    canceling = cancel_at_period_end or canceled_at is not None
    start = tl["subscription_start"]
    return {
        "id": SUBSCRIPTION, "object": "subscription", "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": start, "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic"},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": tl["period_end"] if cancel_at_period_end else None,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": canceled_at,
        "cancellation_details": {"comment": None, "feedback": None,
                                 "reason": "cancellation_requested" if canceling else None},
        "collection_method": "charge_automatically", "created": start, "currency": "usd",
        "customer": CUSTOMER, "customer_account": None, "days_until_due": None,
        "default_payment_method": PAYMENT_METHOD, "default_source": None, "default_tax_rates": [],
        "description": None, "discounts": [], "ended_at": ended_at,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": [{
                "id": ITEM, "object": "subscription_item", "billing_thresholds": None,
                "created": start, "current_period_end": tl["period_end"],
                "current_period_start": start, "discounts": [], "metadata": {},
                "plan": plan(tl), "price": price(tl), "quantity": 1,
                "subscription": SUBSCRIPTION, "tax_rates": [],
            }],
            "has_more": False, "total_count": 1,
            "url": f"/v1/subscription_items?subscription={SUBSCRIPTION}",
        },
        "latest_invoice": latest_invoice, "livemode": False, "metadata": {"account_id": ACCOUNT},
        "next_pending_invoice_item_invoice": None, "on_behalf_of": None, "pause_collection": None,
        "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                             "save_default_payment_method": "off"},
        "pending_invoice_item_interval": None, "pending_setup_intent": None, "pending_update": None,
        "schedule": None, "start_date": start, "status": status, "test_clock": None,
        "transfer_data": None, "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }


def checkout_session(tl):
    opened = tl["session_opened"]
    return {
        "id": SESSION, "object": "checkout.session", "adaptive_pricing": None,
        "after_expiration": None, "allow_promotion_codes": None, "amount_subtotal": 2000,
        "amount_total": 2000,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None, "cancel_url": f"{PUBLIC_URL}/?billing=canceled",
        "client_reference_id": ACCOUNT, "consent": None, "consent_collection": None,
        "created": opened, "currency": "usd", "custom_fields": [],
        "custom_text": {"after_submit": None, "shipping_address": None, "submit": None,
                        "terms_of_service_acceptance": None},
        "customer": CUSTOMER, "customer_creation": None,
        "customer_details": {"address": None, "email": "user@example.com", "name": "Fixture User",
                             "phone": None, "tax_exempt": "none", "tax_ids": []},
        "customer_email": None, "expires_at": opened + DAY, "invoice": FIRST_INVOICE,
        "invoice_creation": None, "livemode": False, "locale": None,
        "metadata": {"account_id": ACCOUNT}, "mode": "subscription", "payment_intent": None,
        "payment_link": None, "payment_method_collection": "always",
        "payment_method_configuration_details": None, "payment_method_options": None,
        "payment_method_types": ["card"], "payment_status": "paid",
        "phone_number_collection": {"enabled": False}, "recovered_from": None,
        "saved_payment_method_options": None, "setup_intent": None,
        "shipping_address_collection": None, "shipping_cost": None, "shipping_options": [],
        "status": "complete", "submit_type": None, "subscription": SUBSCRIPTION,
        "success_url": f"{PUBLIC_URL}/?billing=success",
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted", "url": None,
    }


def invoice(tl, invoice_id, number, paid):
    if paid:  # the first invoice, created with the subscription during checkout
        created, reason, line_id = tl["subscription_start"], "subscription_create", "il_fixture00000001"
        period_start = period_end = created
    else:  # a renewal whose charge was declined (times compressed into the minute before T)
        created, reason, line_id = tl["renewal_invoice_created"], "subscription_cycle", "il_fixture00000002"
        period_start, period_end = tl["subscription_start"], created
    hosted = f"{STRIPE_ACCOUNT}/test_{invoice_id}"
    return {
        "id": invoice_id, "object": "invoice", "account_country": "US",
        "account_name": "QNP Example Inc.", "account_tax_ids": None, "amount_due": 2000,
        "amount_overpaid": 0, "amount_paid": 2000 if paid else 0,
        "amount_remaining": 0 if paid else 2000, "amount_shipping": 0, "application": None,
        "attempt_count": 1, "attempted": True, "auto_advance": not paid,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None,
                          "provider": None, "status": None},
        "billing_reason": reason, "collection_method": "charge_automatically", "created": created,
        "currency": "usd", "custom_fields": None, "customer": CUSTOMER, "customer_address": None,
        "customer_email": "user@example.com", "customer_name": "Fixture User",
        "customer_phone": None, "customer_shipping": None, "customer_tax_exempt": "none",
        "customer_tax_ids": [], "default_payment_method": None, "default_source": None,
        "default_tax_rates": [], "description": None, "discounts": [], "due_date": None,
        "effective_at": created, "ending_balance": 0, "footer": None, "from_invoice": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{hosted}",
        "invoice_pdf": f"https://pay.stripe.com/invoice/{hosted}/pdf",
        "issuer": {"type": "self"}, "last_finalization_error": None, "latest_revision": None,
        "lines": {
            "object": "list",
            "data": [{
                "id": line_id, "object": "line_item", "amount": 2000, "currency": "usd",
                "description": "1 \u00d7 QNP Pro (at $20.00 / month)", "discount_amounts": [],
                "discountable": True, "discounts": [], "invoice": invoice_id, "livemode": False,
                "metadata": {"account_id": ACCOUNT},
                "parent": {
                    "invoice_item_details": None,
                    "subscription_item_details": {
                        "invoice_item": None, "proration": False,
                        "proration_details": {"credited_items": None},
                        "subscription": SUBSCRIPTION, "subscription_item": ITEM,
                    },
                    "type": "subscription_item_details",
                },
                "period": {"end": tl["period_end"], "start": tl["subscription_start"]},
                "pretax_credit_amounts": [],
                "pricing": {"price_details": {"price": PRICE, "product": PRODUCT},
                            "type": "price_details", "unit_amount_decimal": "2000"},
                "quantity": 1, "subtotal": 2000, "taxes": [],
            }],
            "has_more": False, "total_count": 1, "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": False, "metadata": {},
        "next_payment_attempt": None if paid else tl["invoice_payment_failed"] + 3 * DAY,
        "number": number, "on_behalf_of": None,
        "parent": {
            "quote_details": None,
            "subscription_details": {"metadata": {"account_id": ACCOUNT},
                                     "subscription": SUBSCRIPTION},
            "type": "subscription_details",
        },
        "payment_settings": {"default_mandate": None, "payment_method_options": None,
                             "payment_method_types": None},
        "period_end": period_end, "period_start": period_start,
        "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0,
        "receipt_number": None, "rendering": None, "shipping_cost": None, "shipping_details": None,
        "starting_balance": 0, "statement_descriptor": None, "status": "paid" if paid else "open",
        "status_transitions": {"finalized_at": created, "marked_uncollectible_at": None,
                               "paid_at": tl["invoice_paid"] if paid else None,
                               "voided_at": None},
        "subtotal": 2000, "subtotal_excluding_tax": 2000, "test_clock": None, "total": 2000,
        "total_discount_amounts": [], "total_excluding_tax": 2000,
        "total_pretax_credit_amounts": [], "total_taxes": [], "webhooks_delivered_at": created,
    }


def event(kind, event_id, created, obj, previous_attributes=None):
    data = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id, "object": "event", "api_version": API_VERSION, "created": created,
        "data": data, "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None}, "type": kind,
    }


def events(t):
    """(file name, Stripe event) in lifecycle order."""
    tl = timeline(t)
    return [
        ("checkout-session-completed.json", event(
            "checkout.session.completed", "evt_fixture_checkout_session_completed",
            tl["checkout_completed"], checkout_session(tl))),
        ("customer-subscription-created.json", event(
            "customer.subscription.created", "evt_fixture_customer_subscription_created",
            tl["subscription_created"], subscription(tl))),
        ("customer-subscription-updated.json", event(
            "customer.subscription.updated", "evt_fixture_customer_subscription_updated",
            tl["subscription_updated"],
            subscription(tl, cancel_at_period_end=True, canceled_at=tl["subscription_updated"]),
            previous_attributes={"cancel_at": None, "cancel_at_period_end": False,
                                 "canceled_at": None, "cancellation_details": {"reason": None}})),
        ("invoice-paid.json", event(
            "invoice.paid", "evt_fixture_invoice_paid",
            tl["invoice_paid"], invoice(tl, FIRST_INVOICE, "QNPFIX-0001", paid=True))),
        ("invoice-payment-failed.json", event(
            "invoice.payment_failed", "evt_fixture_invoice_payment_failed",
            tl["invoice_payment_failed"], invoice(tl, RENEWAL_INVOICE, "QNPFIX-0002", paid=False))),
        ("customer-subscription-deleted.json", event(
            "customer.subscription.deleted", "evt_fixture_customer_subscription_deleted",
            tl["subscription_deleted"],
            subscription(tl, status="canceled", latest_invoice=RENEWAL_INVOICE,
                         canceled_at=tl["subscription_deleted"],
                         ended_at=tl["subscription_deleted"]))),
    ]


def signature(body, t, secret=SECRET):
    signed = f"{t}.{body}".encode("utf-8")
    return f"t={t},v1={hmac.new(secret.encode('ascii'), signed, hashlib.sha256).hexdigest()}"


def request_time(t):
    """API Gateway's requestContext.time, e.g. 18/Nov/2026:11:06:40 +0000 (no locale involved)."""
    g = time.gmtime(t)
    month = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()[g.tm_mon - 1]
    return f"{g.tm_mday:02d}/{month}/{g.tm_year}:{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} +0000"


def apigw_event(body, t, event_id):
    """The HTTP API (payload 2.0) event Lambda receives for a Stripe delivery at time t."""
    digest = hashlib.sha256(event_id.encode("ascii")).hexdigest()
    source_ip = "54.187.174.169"  # one of Stripe's published webhook source addresses
    user_agent = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
    host = "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"
    return {
        "version": "2.0",
        "routeKey": "POST /webhooks/stripe",
        "rawPath": "/webhooks/stripe",
        "rawQueryString": "",
        "headers": {
            "accept": "*/*; q=0.5, application/xml",
            "cache-control": "no-cache",
            "content-length": str(len(body.encode("utf-8"))),
            "content-type": "application/json; charset=utf-8",
            "host": host,
            "stripe-signature": signature(body, t),
            "user-agent": user_agent,
            "x-amzn-trace-id": f"Root=1-{t:08x}-{digest[:24]}",
            "x-forwarded-for": source_ip,
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": host,
            "domainPrefix": "a1b2c3d4e5",
            "http": {
                "method": "POST",
                "path": "/webhooks/stripe",
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": user_agent,
            },
            "requestId": f"{digest[24:38]}=",
            "routeKey": "POST /webhooks/stripe",
            "stage": "$default",
            "time": request_time(t),
            "timeEpoch": t * 1000 + int(digest[38:41], 16) % 1000,
        },
        "isBase64Encoded": False,
        "body": body,
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", type=int, default=SIGNED_AT,
                        help=f"signing time T in unix seconds (default {SIGNED_AT})")
    parser.add_argument("--out", default=here, help="output directory (default: this one)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, stripe_event in events(args.at):
        body = json.dumps(stripe_event, separators=(",", ":"), ensure_ascii=False)
        fixture = apigw_event(body, args.at, stripe_event["id"])
        with open(os.path.join(args.out, name), "w", encoding="utf-8", newline="\n") as f:
            f.write(json.dumps(fixture, indent=2, ensure_ascii=False) + "\n")
        print(f"{name}: {stripe_event['type']} created {stripe_event['created']}")


if __name__ == "__main__":
    main()
