//! From a validated identity to an account: the identity (provider + subject) finds its account; a first
//! sign-in links to the account with the same verified email (e.g. one an operator created with
//! `qnp keys create`) or creates one.

use qnp_shared::GatewayError;
use qnp_shared::accounts::{Account, Identity, ProfileChange};
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
        if identity.email != claims.email && claims.email.is_some() {
            let refreshed = Identity {
                email: claims.email.clone(),
                ..identity
            };
            records
                .link_identity(&refreshed)
                .await
                .map_err(GatewayError::internal)?;
        }
        return Ok(account);
    }

    let email = claims.email.as_deref().ok_or_else(|| {
        GatewayError::BadRequest(
            "sign-in failed: the identity provider did not share an email".into(),
        )
    })?;
    if let Some(existing) = records
        .account_by_email(email)
        .await
        .map_err(GatewayError::internal)?
    {
        // Linking to an existing account is only safe when the provider vouches for the address.
        if claims.email_verified != Some(true) || !existing.is_active() {
            return Err(GatewayError::Conflict(
                "an account with this email already exists; sign in the way you did before".into(),
            ));
        }
    }
    let account = records
        .account_for_email(email, DEFAULT_PLAN)
        .await
        .map_err(GatewayError::internal)?;
    records
        .link_identity(&Identity {
            provider: provider.into(),
            subject: claims.sub.clone(),
            account_id: account.id.clone(),
            email: claims.email.clone(),
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
