//! Parsing Enterprise Connect member requests; showing member authorizations.

use super::{grant, pb, scopes};
use crate::domain::{
    AuthorizationStatus, EnterpriseAuthorization, EnterpriseUserRequest, Error, Violations, event::limits,
    grant::GrantSelector, rules,
};

/// Parses AuthorizeEnterpriseUser.
pub fn enterprise_user_request(request: &pb::AuthorizeEnterpriseUserRequest) -> Result<EnterpriseUserRequest, Error> {
    let mut v = Violations::default();
    let service_account = match &request.service_account {
        Some(pb::authorize_enterprise_user_request::ServiceAccount::ServiceAccountSub(sub)) => v
            .check("service_account_sub", rules::identifier(sub, limits::ID))
            .map(GrantSelector::Sub),
        Some(pb::authorize_enterprise_user_request::ServiceAccount::ServiceAccountRef(user_ref)) => v
            .check("service_account_ref", rules::identifier(user_ref, limits::ID))
            .map(GrantSelector::UserRef),
        None => {
            v.add(
                "service_account",
                "one of service_account_sub or service_account_ref is required",
            );
            None
        }
    };
    let email = v.check("email", rules::email(&request.email));
    let user_ref = v.check("user_ref", rules::identifier(&request.user_ref, limits::ID));
    let scope = scopes(&request.scope, "scope", &mut v);
    let parsed = match (service_account, email, user_ref) {
        (Some(service_account), Some(email), Some(user_ref)) => Some(EnterpriseUserRequest {
            service_account,
            email,
            user_ref,
            scope,
        }),
        _ => None,
    };
    v.finish_with(parsed)
}

/// Parses GetEnterpriseUserAuthorization.
pub fn authorization_id(request: &pb::GetEnterpriseUserAuthorizationRequest) -> Result<String, Error> {
    let mut v = Violations::default();
    let id = v.check("authorization_id", rules::identifier(&request.authorization_id, 64));
    v.finish()?;
    Ok(id.unwrap_or_default())
}

/// A member authorization as the API shows it.
pub fn enterprise_authorization(authorization: EnterpriseAuthorization) -> pb::EnterpriseUserAuthorization {
    let record = authorization.record;
    let status = match record.status {
        // A callback's code being exchanged is still pending to the caller.
        AuthorizationStatus::Pending | AuthorizationStatus::Exchanging => {
            pb::EnterpriseUserAuthorizationStatus::Pending
        }
        AuthorizationStatus::Completed => pb::EnterpriseUserAuthorizationStatus::Completed,
        AuthorizationStatus::Failed => pb::EnterpriseUserAuthorizationStatus::Failed,
        AuthorizationStatus::Expired => pb::EnterpriseUserAuthorizationStatus::Expired,
    };
    let at = |seconds: i64| prost_types::Timestamp { seconds, nanos: 0 };
    pb::EnterpriseUserAuthorization {
        authorization_id: record.id,
        email: record.email,
        user_ref: record.user_ref,
        status: status as i32,
        error_key: record.error_key.unwrap_or_default(),
        grant: authorization.grant.map(grant),
        created_at: Some(at(record.created_at)),
        updated_at: Some(at(record.updated_at)),
    }
}
