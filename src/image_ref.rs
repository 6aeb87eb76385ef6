//! Image references as Docker reads them (the `distribution/reference` rules dockerd and the
//! docker CLI use): `busybox`, `busybox:1.36`, `library/busybox`, `docker.io/library/busybox`
//! and `index.docker.io/library/busybox:latest` are one image, and a policy that compares the
//! text as the client spelled it misses the others. [`parse`] gives the normalised parts, for
//! `docker.image_ref` and `luastrip.policy`.

use std::sync::OnceLock;

use regex::Regex;

/// The registry an image without one comes from.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A reference, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `docker.io`, `registry.example:5000`, `localhost`.
    pub registry: String,
    /// The path in the registry: `library/busybox`, `team/app`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// `registry/repository`: the image's full name.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The name as the docker CLI shows it: `busybox`, `team/app`, `registry.example/app`.
    pub fn familiar_name(&self) -> String {
        if self.registry != DEFAULT_REGISTRY {
            return self.name();
        }
        match self.repository.strip_prefix("library/") {
            Some(rest) if !rest.contains('/') => rest.to_string(),
            _ => self.repository.clone(),
        }
    }

    /// The whole reference as `docker pull` reads it: `latest` when neither a tag nor a digest
    /// is given.
    pub fn canonical(&self) -> String {
        let mut s = self.name();
        match (&self.tag, &self.digest) {
            (None, None) => s.push_str(":latest"),
            (Some(t), _) => {
                s.push(':');
                s.push_str(t);
            }
            _ => {}
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a valid pattern"))
}

/// Compile the patterns now (they are compiled once, on first use), so that no hook's time budget
/// pays for it.
pub fn warm() {
    let _ = parse("busybox");
}

/// Parse `s` as Docker does (`reference.ParseNormalizedNamed`; Go's `\w` is ASCII, and so are
/// these classes); an error says why not, in Docker's words.
pub fn parse(s: &str) -> Result<ImageRef, String> {
    static ID: OnceLock<Regex> = OnceLock::new();
    static DOMAIN: OnceLock<Regex> = OnceLock::new();
    static REST: OnceLock<Regex> = OnceLock::new();
    if regex(&ID, r"^[a-f0-9]{64}$").is_match(s) {
        return Err(format!(
            "invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        ));
    }
    // The first component is a registry if it looks like a host: a dot, a port, or localhost
    // (and no upper case, which a repository may not have either).
    let (registry, rest) = match s.split_once('/') {
        Some((first, rest))
            if (first.contains(['.', ':']) || first == "localhost")
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_REGISTRY.to_string(), s.to_string()),
    };
    let registry = if registry == "index.docker.io" {
        DEFAULT_REGISTRY.to_string()
    } else {
        registry
    };
    let remote = rest.split([':', '@']).next().unwrap_or("");
    if remote.to_lowercase() != remote {
        return Err(format!(
            "invalid reference format: repository name ({remote}) must be lowercase"
        ));
    }
    let domain = regex(
        &DOMAIN,
        r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$",
    );
    if !domain.is_match(&registry) {
        return Err("invalid reference format".into());
    }
    let component = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
    let caps = regex(
        &REST,
        &format!(
            r"^({component}(?:/{component})*)(?::([0-9A-Za-z_][0-9A-Za-z_.-]{{0,127}}))?(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}}))?$"
        ),
    )
    .captures(&rest)
    .ok_or_else(|| "invalid reference format".to_string())?;
    let mut repository = caps[1].to_string();
    if registry == DEFAULT_REGISTRY && !repository.contains('/') {
        repository = format!("library/{repository}");
    }
    if registry.len() + 1 + repository.len() > 255 {
        return Err("repository name must not be more than 255 characters".into());
    }
    Ok(ImageRef {
        registry,
        repository,
        tag: caps.get(2).map(|m| m.as_str().to_string()),
        digest: caps.get(3).map(|m| m.as_str().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_image_read_alike() {
        for s in [
            "busybox",
            "library/busybox",
            "docker.io/busybox",
            "docker.io/library/busybox",
            "index.docker.io/library/busybox",
        ] {
            let r = parse(s).unwrap();
            assert_eq!(r.name(), "docker.io/library/busybox", "{s}");
            assert_eq!(r.familiar_name(), "busybox", "{s}");
            assert_eq!(r.canonical(), "docker.io/library/busybox:latest", "{s}");
        }
        let r = parse("busybox:1.36").unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.36"));
        assert_eq!(r.canonical(), "docker.io/library/busybox:1.36");
        let r = parse("team/app:v2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "team/app")
        );
        assert_eq!(r.familiar_name(), "team/app");
        let d = "sha256:".to_string() + &"a".repeat(64);
        let r = parse(&format!("registry.example:5000/team/app:1@{d}")).unwrap();
        assert_eq!(r.registry, "registry.example:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.familiar_name(), "registry.example:5000/team/app");
        let r = parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.canonical(), format!("docker.io/library/busybox@{d}"));
        // A first component with a dot, a port or `localhost` is a registry; others are not.
        assert_eq!(parse("localhost/app").unwrap().registry, "localhost");
        assert_eq!(
            parse("localhost:5000/app").unwrap().registry,
            "localhost:5000"
        );
        assert_eq!(parse("reg.example/app").unwrap().repository, "app");
        assert_eq!(parse("team/app").unwrap().registry, "docker.io");
    }

    #[test]
    fn what_docker_refuses_is_refused() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox@sha256:abc",
            "bad..name",
            "-busybox",
            "busybox:tag with space",
            "reg.example/",
            "a//b",
            &"a".repeat(64).replace('a', "f"),
            &format!("docker.io/{}", "x".repeat(300)),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}: {:?}", parse(bad));
        }
        assert!(
            parse("TEAM.example/app").is_ok(),
            "a registry may have upper case"
        );
    }
}
