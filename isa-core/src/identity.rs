//! Who is calling: the one identity type every service, tool and check uses.

use serde::{Deserialize, Serialize};

use crate::{Error, Result, UserId};

/// The scope that holds every other scope: an administrator may act for any user and use any
/// tool.
pub const ADMIN_SCOPE: &str = "admin";

/// The header with which an administrator's request acts as another user: a service calling
/// another for one of its users (the agent for an event's user) names the user here, and the
/// callee serves the request as that user, with none of the administrator's scopes.
pub const ACT_FOR_HEADER: &str = "x-act-for-user";

/// How an [`Identity`] was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A verified JWT (Supabase, Auth0 or another configured issuer).
    Jwt,
    /// A verified API key.
    ApiKey,
    /// Asserted by the application that embeds isa, which checked it itself (in-process calls,
    /// tests); no credential was verified by isa.
    Trusted,
}

/// A caller whose identity is established: the user, what they may do, and how they proved it.
///
/// One rule for scopes everywhere: [`Identity::has_scope`] is true for a scope the identity
/// holds, and for every scope when it holds [`ADMIN_SCOPE`].
///
/// ```
/// use isa_core::{AuthMethod, Identity, UserId};
/// let alice = Identity::new(UserId::new("alice").unwrap(), AuthMethod::Jwt);
/// assert!(alice.authorize_user(&UserId::new("alice").unwrap()).is_ok());
/// assert!(alice.authorize_user(&UserId::new("bob").unwrap()).is_err());
/// assert!(!alice.has_scope("billing"));
/// let root = alice.with_scopes(["admin"]);
/// assert!(root.has_scope("billing"));
/// assert!(root.authorize_user(&UserId::new("bob").unwrap()).is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user (`sub` of a token, owner of a key).
    pub user_id: UserId,
    /// Email, when the credential carries one.
    #[serde(default)]
    pub email: Option<String>,
    /// Scopes and permissions (a token's `scope`, `scp`, `permissions` and roles; a key's
    /// scopes).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Organisation (`org_id`), when the credential carries one.
    #[serde(default)]
    pub organization: Option<String>,
    /// How the identity was established.
    pub method: AuthMethod,
}

impl Identity {
    /// An identity with no scopes, email or organisation.
    pub fn new(user_id: UserId, method: AuthMethod) -> Self {
        Identity {
            user_id,
            email: None,
            scopes: Vec::new(),
            organization: None,
            method,
        }
    }

    /// The same identity holding `scopes`.
    pub fn with_scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Whether the identity holds [`ADMIN_SCOPE`].
    pub fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == ADMIN_SCOPE)
    }

    /// Whether the identity holds `scope`; an administrator holds every scope.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.is_admin() || self.scopes.iter().any(|s| s == scope)
    }

    /// `Ok` if the identity holds `scope` (see [`Identity::has_scope`]).
    pub fn require_scope(&self, scope: &str) -> Result<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("the scope {scope:?} is required")))
        }
    }

    /// The identity with which an administrator acts as `user` ([`ACT_FOR_HEADER`]): that user,
    /// holding no scope; refused for anyone but an administrator.
    pub fn acting_for(&self, user: UserId) -> Result<Identity> {
        if !self.is_admin() {
            return Err(Error::Forbidden(format!(
                "{} may not act as another user",
                self.user_id
            )));
        }
        Ok(Identity {
            user_id: user,
            email: None,
            scopes: Vec::new(),
            organization: self.organization.clone(),
            method: self.method,
        })
    }

    /// `Ok` if the identity may act on `user`'s data: it is that user, or an administrator.
    pub fn authorize_user(&self, user: &UserId) -> Result<()> {
        if &self.user_id == user || self.is_admin() {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{} may not act for another user",
                self.user_id
            )))
        }
    }
}
