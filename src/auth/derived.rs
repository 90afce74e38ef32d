//! SCRAM secrets derived once per user from plaintext `auth_file` passwords, so a
//! SCRAM login costs no PBKDF2 on pgfleet's side and a user's salt stays the same
//! from one login to the next (as it does for users with a stored secret).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{ScramSecret, Secret};

/// Salt length and iteration count of derived secrets, PostgreSQL's defaults.
const SALT_LEN: usize = 16;
const ITERATIONS: u32 = 4096;

/// A cache of derived SCRAM secrets, keyed by user and checked against the password.
#[derive(Debug, Default)]
pub struct DerivedSecrets {
    map: Mutex<HashMap<String, (String, ScramSecret)>>,
}

impl DerivedSecrets {
    /// The secret to run SCRAM with for `user`: a stored SCRAM secret as it is, a
    /// plaintext password as its (cached) derived secret, and anything else unchanged.
    pub fn for_scram(&self, user: &str, secret: &Secret) -> Secret {
        let Secret::Plain(password) = secret else {
            return secret.clone();
        };
        if password.is_empty() {
            return secret.clone();
        }
        let mut map = crate::sync::lock(&self.map);
        if let Some((pw, derived)) = map.get(user) {
            if pw == password {
                return Secret::Scram(derived.clone());
            }
        }
        let salt: [u8; SALT_LEN] = rand::random();
        let derived = ScramSecret::from_password(password, &salt, ITERATIONS);
        map.insert(user.to_owned(), (password.clone(), derived.clone()));
        Secret::Scram(derived)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_once_and_follows_password_changes() {
        let cache = DerivedSecrets::default();
        let a = cache.for_scram("u", &Secret::Plain("pw".into()));
        let b = cache.for_scram("u", &Secret::Plain("pw".into()));
        assert_eq!(a, b);
        let c = cache.for_scram("u", &Secret::Plain("other".into()));
        assert_ne!(a, c);
        let md5 = Secret::parse("md53175bce1d3201d16594cebf9d7eb3f9d");
        assert_eq!(cache.for_scram("u", &md5), md5);
    }
}
