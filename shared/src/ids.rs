//! Identifiers the gateway makes: random tokens (account ids, OAuth state, secrets) and the API key
//! format's prefix. At the bottom of the crate: accounts, keys and sessions all use it.

use rand::Rng;
use rand::distr::Alphanumeric;

/// What every API key begins with: `qnp_<key id>_<secret>`.
pub const KEY_PREFIX: &str = "qnp_";

/// `len` random alphanumeric characters from the thread's CSPRNG.
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
