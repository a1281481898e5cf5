//! From a validated identity to an account: the identity (provider + subject) finds its account; a first
//! sign-in links to the account with the same email (e.g. one an operator created with `qnp keys
//! create`) or creates one.
//!
//! An address only ever becomes an account's email, or links a sign-in to an account, when the identity
//! provider vouches for it (`email_verified`): otherwise whoever typed someone else's address first could
//! own their keys. Identities keep only verified addresses, and those are the only ones an account's
//! email can be corrected to (`PATCH /account`).

use qnp_shared::GatewayError;
use qnp_shared::accounts::{Account, Identity, ProfileChange, normalize_email};
use qnp_shared::plans::DEFAULT_PLAN;
use qnp_shared::store::RecordStore;
use time::OffsetDateTime;

use crate::oidc::IdClaims;

pub async fn account_for(
    records: &dyn RecordStore,
    provider: &str,
    claims: &IdClaims,
    first_name: Option<String>,
) -> Result<Account, GatewayError> {
    let now = OffsetDateTime::now_utc();
    let verified_email = claims
        .email
        .as_deref()
        .filter(|_| claims.email_verified == Some(true))
        .map(normalize_email);
    if let Some(identity) = records
        .identity(provider, &claims.sub)
        .await
        .map_err(GatewayError::internal)?
        && let Some(account) = records
            .account(&identity.account_id)
            .await
            .map_err(GatewayError::internal)?
            .filter(Account::is_active)
    {
        if identity.email != verified_email {
            let refreshed = Identity {
                email: verified_email,
                ..identity
            };
            records
                .link_identity(&refreshed)
                .await
                .map_err(GatewayError::internal)?;
        }
        return Ok(account);
    }

    if claims.email.is_none() {
        return Err(GatewayError::BadRequest(
            "sign-in failed: the identity provider did not share an email".into(),
        ));
    }
    let email = verified_email.clone().ok_or_else(|| {
        GatewayError::BadRequest(
            "sign-in failed: the identity provider has not verified this email address".into(),
        )
    })?;
    if let Some(existing) = records
        .account_by_email(&email)
        .await
        .map_err(GatewayError::internal)?
        && !existing.is_active()
    {
        return Err(GatewayError::Conflict(
            "an account with this email already exists; sign in the way you did before".into(),
        ));
    }
    let account = records
        .account_for_email(&email, DEFAULT_PLAN)
        .await
        .map_err(GatewayError::internal)?;
    records
        .link_identity(&Identity {
            provider: provider.into(),
            subject: claims.sub.clone(),
            account_id: account.id.clone(),
            email: verified_email,
            created_at: now,
        })
        .await
        .map_err(GatewayError::internal)?;
    let name = claims.name.clone().or(first_name);
    if account.name.is_none()
        && let Some(name) = name
    {
        let change = ProfileChange {
            name: Some(name),
            email: None,
        };
        if let qnp_shared::accounts::ProfileUpdate::Updated(updated) = records
            .update_profile(&account.id, &change)
            .await
            .map_err(GatewayError::internal)?
        {
            return Ok(*updated);
        }
    }
    Ok(account)
}
