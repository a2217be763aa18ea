//! Who a verified credential belongs to, and what they may do.

use isa_core::{Error, Result, UserId, mcp::Caller};
use serde::Serialize;

/// The scope that lets a principal act on any user's data.
pub const ADMIN_SCOPE: &str = "admin";

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A JWT (Supabase, Auth0 or another configured issuer).
    Jwt,
    /// An API key.
    ApiKey,
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The user (`sub` of a token, owner of a key).
    pub user_id: UserId,
    /// Email, when the token carries one.
    pub email: Option<String>,
    /// Scopes and permissions (`scope`, `scp`, `permissions`), plus roles.
    pub scopes: Vec<String>,
    /// Organisation (`org_id`), when the token carries one.
    pub organization: Option<String>,
    /// How the principal authenticated.
    pub method: AuthMethod,
}

impl Principal {
    /// Whether the principal holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// `Ok` if the principal may act on `user`'s data: it is that user, or holds the admin
    /// scope.
    ///
    /// ```
    /// use isa_auth::{AuthMethod, Principal};
    /// use isa_core::UserId;
    /// let alice = Principal {
    ///     user_id: UserId::new("alice").unwrap(),
    ///     email: None,
    ///     scopes: vec![],
    ///     organization: None,
    ///     method: AuthMethod::Jwt,
    /// };
    /// assert!(alice.authorize_user(&UserId::new("alice").unwrap()).is_ok());
    /// assert!(alice.authorize_user(&UserId::new("bob").unwrap()).is_err());
    /// ```
    pub fn authorize_user(&self, user: &UserId) -> Result<()> {
        if &self.user_id == user || self.has_scope(ADMIN_SCOPE) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{} may not act for another user",
                self.user_id
            )))
        }
    }

    /// `Ok` if the principal holds `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<()> {
        if self.has_scope(scope) || self.has_scope(ADMIN_SCOPE) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("the scope {scope:?} is required")))
        }
    }

    /// The caller as the MCP service sees it.
    pub fn caller(&self) -> Caller {
        Caller {
            user: Some(self.user_id.clone()),
            scopes: self.scopes.clone(),
        }
    }
}
