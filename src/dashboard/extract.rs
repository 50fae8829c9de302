//! Who may make a dashboard request, checked before the handler runs (axum extractors).
//!
//! - [`Signed`]: a page (GET) needs a live session; without one the browser is sent to
//!   the sign-in form.
//! - [`Reviewer`]: a page that shows who did what (events, an event, the export, the
//!   policy): a lead's or an admin's; a governor gets 403.
//! - [`Admin`]: a page only an admin may see; a lead gets 403.
//! - [`SignedForm`]: a form POST needs a live session (401 without one, since a POST
//!   cannot be replayed through a redirect), a readable form (400) and the session's CSRF
//!   token in the form (403), checked in that order.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::Form;
use serde::de::DeserializeOwned;

use super::auth::{self, Session};
use super::state::{form, Dashboard, PageError};
use crate::config::Role;

/// A signed-in user asking for a page.
pub(crate) struct Signed(pub Session);

/// A signed-in lead or admin asking for a page.
pub(crate) struct Reviewer(pub Session);

/// A signed-in admin asking for a page.
pub struct Admin(pub Session);

/// A form posted by a signed-in user, with its CSRF token checked.
pub(crate) struct SignedForm<T>(pub Session, pub T);

/// A form that carries the session's CSRF token.
pub(crate) trait CarriesCsrf {
    fn csrf(&self) -> &str;
}

impl FromRequestParts<Arc<Dashboard>> for Signed {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Dashboard>) -> Result<Self, PageError> {
        d.session(&parts.headers)
            .map(Signed)
            .ok_or(PageError::SignInFirst)
    }
}

impl FromRequestParts<Arc<Dashboard>> for Reviewer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Dashboard>) -> Result<Self, PageError> {
        let Signed(session) = Signed::from_request_parts(parts, d).await?;
        require_reviewer(&session)?;
        Ok(Reviewer(session))
    }
}

impl FromRequestParts<Arc<Dashboard>> for Admin {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Dashboard>) -> Result<Self, PageError> {
        let Signed(session) = Signed::from_request_parts(parts, d).await?;
        require_admin(&session)?;
        Ok(Admin(session))
    }
}

impl<T> FromRequest<Arc<Dashboard>> for SignedForm<T>
where
    T: DeserializeOwned + CarriesCsrf + Send,
{
    type Rejection = PageError;

    async fn from_request(request: Request, d: &Arc<Dashboard>) -> Result<Self, PageError> {
        let session = d.session(request.headers()).ok_or(PageError::NotSignedIn)?;
        let value = form(Form::<T>::from_request(request, d).await)?;
        check_csrf(&session, value.csrf())?;
        Ok(SignedForm(session, value))
    }
}

/// Only an admin may go on (a lead is refused with 403).
pub(crate) fn require_admin(session: &Session) -> Result<(), PageError> {
    if session.role == Role::Admin {
        Ok(())
    } else {
        Err(PageError::Forbidden(
            "Only an admin can change the allow list. Ask your Warden admin.".to_string(),
        ))
    }
}

/// Only a lead or an admin may go on: a governor's account shows counts, never who.
pub(crate) fn require_reviewer(session: &Session) -> Result<(), PageError> {
    if session.role.sees_people() {
        Ok(())
    } else {
        Err(PageError::Forbidden(
            "A governor's account shows the overview and the review report, in counts: \
             events and who was blocked are for the e-safety lead."
                .to_string(),
        ))
    }
}

/// The form's token must be this session's: a page of another site cannot know it, so
/// it cannot post a form in the user's name (the cookie alone proves nothing).
fn check_csrf(session: &Session, presented: &str) -> Result<(), PageError> {
    if auth::tokens_equal(presented, &session.csrf) {
        Ok(())
    } else {
        Err(PageError::BadToken)
    }
}
