//! What a client asked for in its StartupMessage: user, replication mode and timeline.

use strata_ids::{TenantId, TimelineId};

use super::errors::{sqlstate, PgError};

/// Name of the run-time parameter naming the tenant (in `options` or as a startup
/// parameter).
pub const TENANT_ID_PARAMETER: &str = "tenant_id";
/// Name of the run-time parameter naming the timeline.
pub const TIMELINE_ID_PARAMETER: &str = "timeline_id";

/// The startup parameters the safekeeper uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupParameters {
    pub user: String,
    pub database: Option<String>,
    pub application_name: Option<String>,
    pub client_encoding: Option<String>,
    pub tenant_id: Option<TenantId>,
    pub timeline_id: Option<TimelineId>,
    /// Run-time settings from `options` that the safekeeper does not use (kept for logs).
    pub ignored_settings: Vec<String>,
    /// `_pq_.` protocol options, which we must report as unrecognised.
    pub protocol_options: Vec<String>,
}

impl StartupParameters {
    /// Check and interpret the parameters of a StartupMessage. Only physical replication
    /// connections (`replication=true`) are served.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, PgError> {
        let mut params = StartupParameters::default();
        let mut user = None;
        let mut replication = None;
        for (name, value) in pairs {
            match name.as_str() {
                "user" => user = Some(value.clone()),
                "database" => params.database = Some(value.clone()),
                "application_name" => params.application_name = Some(value.clone()),
                "client_encoding" => params.client_encoding = Some(value.clone()),
                "replication" => replication = Some(value.clone()),
                "options" => params.apply_options(value)?,
                _ if name.starts_with("_pq_.") => params.protocol_options.push(name.clone()),
                _ => params.apply_setting(name, value)?,
            }
        }
        match user {
            Some(user) if !user.is_empty() => params.user = user,
            _ => {
                return Err(PgError::fatal(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    "no PostgreSQL user name specified in startup packet",
                ))
            }
        }
        check_replication_mode(replication.as_deref())?;
        Ok(params)
    }

    /// Apply the `options` parameter: command-line switches separated by spaces
    /// (a backslash escapes the next character), of which `-c name=value` and
    /// `--name=value` set run-time parameters.
    fn apply_options(&mut self, options: &str) -> Result<(), PgError> {
        let words = split_options(options);
        let mut words = words.iter();
        while let Some(word) = words.next() {
            let setting = if word == "-c" {
                words
                    .next()
                    .map(String::as_str)
                    .ok_or_else(|| invalid_option(options, "-c must be followed by name=value"))?
            } else if let Some(rest) = word.strip_prefix("-c") {
                rest
            } else if let Some(rest) = word.strip_prefix("--") {
                rest
            } else {
                return Err(invalid_option(
                    options,
                    "only -c name=value and --name=value are understood",
                ));
            };
            let Some((name, value)) = setting.split_once('=') else {
                return Err(invalid_option(options, "a setting must be name=value"));
            };
            self.apply_setting(&name.replace('-', "_"), value)?;
        }
        Ok(())
    }

    /// A run-time parameter, from `options` or given as a startup parameter of its own.
    fn apply_setting(&mut self, name: &str, value: &str) -> Result<(), PgError> {
        if name.eq_ignore_ascii_case(TENANT_ID_PARAMETER) {
            let id = parse_id(name, value)?;
            set_once(&mut self.tenant_id, id, name)
        } else if name.eq_ignore_ascii_case(TIMELINE_ID_PARAMETER) {
            let id = parse_id(name, value)?;
            set_once(&mut self.timeline_id, id, name)
        } else {
            self.ignored_settings.push(name.to_owned());
            Ok(())
        }
    }
}

fn check_replication_mode(value: Option<&str>) -> Result<(), PgError> {
    let value = value.map(str::to_ascii_lowercase);
    match value.as_deref() {
        Some("true" | "on" | "yes" | "1") => Ok(()),
        Some("database") => Err(PgError::fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "logical replication is not supported by the Strata safekeeper",
        )
        .with_hint("Connect with replication=true.")),
        Some("false" | "off" | "no" | "0") | None => Err(PgError::fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "the Strata safekeeper only accepts physical replication connections",
        )
        .with_hint("Connect with replication=true, as pg_receivewal and standbys do.")),
        Some(other) => Err(PgError::fatal(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("invalid value for parameter \"replication\": \"{other}\""),
        )
        .with_hint("Valid values are: \"false\", 0, \"true\", 1, \"database\".")),
    }
}

fn parse_id<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, PgError> {
    value.parse().map_err(|_| {
        PgError::fatal(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("invalid value for parameter \"{name}\": \"{value}\""),
        )
        .with_hint("Expected 32 hexadecimal digits.")
    })
}

fn set_once<T: PartialEq + std::fmt::Display>(
    slot: &mut Option<T>,
    value: T,
    name: &str,
) -> Result<(), PgError> {
    match slot {
        Some(existing) if *existing != value => Err(PgError::fatal(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("parameter \"{name}\" given twice: {existing} and {value}"),
        )),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

fn invalid_option(options: &str, why: &str) -> PgError {
    PgError::fatal(
        sqlstate::PROTOCOL_VIOLATION,
        format!("invalid command-line argument in options \"{options}\": {why}"),
    )
}

/// Split `options` as PostgreSQL's `pg_split_opts` does: words separated by whitespace, a
/// backslash making the next character literal.
pub fn split_options(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace()) {
            if c == '\\' {
                if let Some(escaped) = chars.next() {
                    word.push(escaped);
                }
            } else {
                word.push(c);
            }
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "0123456789abcdef0123456789abcdef";
    const TIMELINE: &str = "fedcba9876543210fedcba9876543210";

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn check_ok(items: &[(&str, &str)]) -> StartupParameters {
        match StartupParameters::from_pairs(&pairs(items)) {
            Ok(p) => p,
            Err(e) => panic!("{items:?}: {e}"),
        }
    }

    fn check_err(items: &[(&str, &str)], code: &str, needle: &str) {
        match StartupParameters::from_pairs(&pairs(items)) {
            Ok(p) => panic!("{items:?} accepted: {p:?}"),
            Err(e) => {
                assert!(e.is_fatal(), "{e}");
                assert_eq!(e.code, code, "{e}");
                assert!(e.message.contains(needle), "{e} lacks {needle:?}");
            }
        }
    }

    #[test]
    fn walreceiver_and_pg_receivewal_startup_packets_are_accepted() {
        // What libpqwalreceiver sends for primary_conninfo = 'host=.. user=x'.
        let p = check_ok(&[
            ("user", "x"),
            ("database", "replication"),
            ("replication", "true"),
            ("application_name", "walreceiver"),
        ]);
        assert_eq!(p.user, "x");
        assert_eq!(p.application_name.as_deref(), Some("walreceiver"));
        assert_eq!((p.tenant_id, p.timeline_id), (None, None));
        for value in ["on", "yes", "1", "TRUE"] {
            check_ok(&[("user", "x"), ("replication", value)]);
        }
    }

    #[test]
    fn ids_come_from_options_or_their_own_parameters() {
        let options = format!("-c tenant_id={TENANT} -c timeline_id={TIMELINE}");
        let p = check_ok(&[
            ("user", "x"),
            ("replication", "true"),
            ("options", &options),
        ]);
        assert_eq!(p.tenant_id.map(|t| t.to_string()).as_deref(), Some(TENANT));
        assert_eq!(
            p.timeline_id.map(|t| t.to_string()).as_deref(),
            Some(TIMELINE)
        );

        let options = format!("-ctenant_id={TENANT}  --timeline-id={TIMELINE} -c work_mem=1MB");
        let p = check_ok(&[("user", "x"), ("replication", "1"), ("options", &options)]);
        assert!(p.tenant_id.is_some() && p.timeline_id.is_some());
        assert_eq!(p.ignored_settings, vec!["work_mem".to_string()]);

        let p = check_ok(&[
            ("user", "x"),
            ("replication", "true"),
            ("tenant_id", TENANT),
            ("TIMELINE_ID", TIMELINE),
            ("options", &format!("-c tenant_id={TENANT}")),
        ]);
        assert!(p.tenant_id.is_some() && p.timeline_id.is_some());
    }

    #[test]
    fn bad_startup_parameters_are_fatal() {
        let invalid = sqlstate::INVALID_PARAMETER_VALUE;
        check_err(
            &[("replication", "true")],
            "28000",
            "no PostgreSQL user name",
        );
        check_err(
            &[("user", ""), ("replication", "true")],
            "28000",
            "user name",
        );
        check_err(&[("user", "x")], "0A000", "physical replication");
        check_err(
            &[("user", "x"), ("replication", "false")],
            "0A000",
            "physical",
        );
        check_err(
            &[("user", "x"), ("replication", "database")],
            "0A000",
            "logical",
        );
        check_err(
            &[("user", "x"), ("replication", "maybe")],
            invalid,
            "replication",
        );
        let base = [("user", "x"), ("replication", "true")];
        for (options, needle) in [
            ("-c tenant_id=xyz", "tenant_id"),
            ("-c timeline_id=0123", "timeline_id"),
            ("-c", "-c must be followed"),
            ("-c tenant_id", "name=value"),
            ("-d 5", "only -c"),
        ] {
            let mut items = base.to_vec();
            items.push(("options", options));
            let code = if needle.contains('_') {
                invalid
            } else {
                "08P01"
            };
            check_err(&items, code, needle);
        }
        let conflicting = format!("-c tenant_id={TENANT} -c tenant_id={TIMELINE}");
        let mut items = base.to_vec();
        items.push(("options", &conflicting));
        check_err(&items, invalid, "given twice");
    }

    #[test]
    fn options_split_like_pg_split_opts() {
        assert_eq!(split_options(""), Vec::<String>::new());
        assert_eq!(
            split_options("  -c a=b\t-c  c=d "),
            ["-c", "a=b", "-c", "c=d"]
        );
        assert_eq!(split_options(r"-c a=x\ y"), ["-c", "a=x y"]);
        assert_eq!(split_options(r"-c a=\\"), ["-c", r"a=\"]);
        assert_eq!(split_options(r"trailing\"), ["trailing"]);
    }

    #[test]
    fn protocol_options_are_collected() {
        let p = check_ok(&[("user", "x"), ("replication", "true"), ("_pq_.foo", "1")]);
        assert_eq!(p.protocol_options, vec!["_pq_.foo".to_string()]);
    }
}
