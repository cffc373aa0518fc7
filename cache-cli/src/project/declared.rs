//! What a project already says about how its app runs, read before
//! anything is guessed: a `Procfile`'s `web` process, and an existing
//! `Dockerfile`'s final stage (`CMD`, `ENTRYPOINT`, `ENV`, `WORKDIR`,
//! `USER`, `EXPOSE`, and the folder `COPY . DIR` puts the app in). Each
//! value keeps where it came from, for `cachectl init` to say.

use std::path::Path;

use crate::upstream::dockerfile::{arg_words, instructions};

/// A value and where it was read (`Procfile (web)`, `Dockerfile line 12`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it was read.
    pub from: String,
}

/// Variables that say where a Dockerfile installed things (its own
/// virtualenv, its `PATH`): the base cachectl builds puts dependencies
/// elsewhere, so these are not taken.
const LAYOUT_VARIABLES: &[&str] = &[
    "PATH",
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "NODE_PATH",
    "LD_LIBRARY_PATH",
    "GEM_HOME",
    "BUNDLE_PATH",
];

/// What the project declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// The command.
    pub cmd: Option<Sourced<Vec<String>>>,
    /// The entrypoint.
    pub entrypoint: Option<Sourced<Vec<String>>>,
    /// Environment variables, in order.
    pub env: Vec<Sourced<(String, String)>>,
    /// Variables not taken, and why.
    pub skipped_env: Vec<String>,
    /// The working directory.
    pub workdir: Option<Sourced<String>>,
    /// The folder the app is copied to (`COPY . /code/`).
    pub app_folder: Option<Sourced<String>>,
    /// The user.
    pub user: Option<Sourced<String>>,
    /// Ports, as `EXPOSE` names them.
    pub expose: Vec<Sourced<String>>,
}

/// A command line as an argument list: its words, or `sh -c LINE` when it
/// needs a shell (variables, `&&`, pipes, redirections).
fn command_words(line: &str) -> Option<Vec<String>> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    if line.contains(['$', '&', '|', ';', '<', '>', '`', '*', '(']) {
        return Some(vec!["/bin/sh".into(), "-c".into(), line.to_owned()]);
    }
    shlex::split(line).filter(|words| !words.is_empty())
}

/// The `web` process of a Procfile's `text`.
fn procfile_web(text: &str) -> Option<Vec<String>> {
    text.lines().find_map(|line| {
        let (name, command) = line.split_once(':')?;
        (name.trim() == "web")
            .then(|| command_words(command))
            .flatten()
    })
}

/// `CMD` / `ENTRYPOINT` arguments: the JSON (exec) form as it is, the shell
/// form as `/bin/sh -c LINE`, as Docker runs them.
fn exec_or_shell(rest: &str) -> Option<Vec<String>> {
    let rest = rest.trim();
    if rest.starts_with('[')
        && let Ok(words) = serde_json::from_str::<Vec<String>>(rest)
    {
        return Some(words);
    }
    (!rest.is_empty()).then(|| vec!["/bin/sh".into(), "-c".into(), rest.to_owned()])
}

fn sourced<T>(value: T, from: &str) -> Sourced<T> {
    Sourced {
        value,
        from: from.to_owned(),
    }
}

/// `path` against the working directory `workdir`, without a trailing `/`.
fn absolute(path: &str, workdir: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{path}", workdir.trim_end_matches('/'))
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// What the final stage of the Dockerfile `text` sets.
fn dockerfile_stage(text: &str, name: &str) -> Declared {
    let mut stage = Declared::default();
    let mut workdir = "/".to_owned();
    for instruction in instructions(text) {
        let from = format!("{name} line {}", instruction.line);
        let rest = instruction.rest.as_str();
        match instruction.keyword.as_str() {
            "FROM" => {
                stage = Declared::default();
                workdir = "/".into();
            }
            "CMD" => stage.cmd = exec_or_shell(rest).map(|value| sourced(value, &from)),
            "ENTRYPOINT" => {
                stage.entrypoint = exec_or_shell(rest).map(|value| sourced(value, &from))
            }
            "WORKDIR" => {
                workdir = absolute(rest.trim_matches('"'), &workdir);
                stage.workdir = Some(sourced(workdir.clone(), &from));
            }
            "USER" if !rest.contains('$') => stage.user = Some(sourced(rest.to_owned(), &from)),
            "EXPOSE" => {
                for port in rest.split_whitespace() {
                    if port.contains('$') {
                        stage
                            .skipped_env
                            .push(format!("EXPOSE {port} ({from}: a variable)"));
                    } else {
                        stage.expose.push(sourced(port.to_owned(), &from));
                    }
                }
            }
            "ENV" => {
                // `ENV NAME=value ...`, or the old `ENV NAME value`.
                let pairs: Vec<(String, String)> = if rest
                    .split_whitespace()
                    .next()
                    .is_some_and(|word| word.contains('='))
                {
                    arg_words(rest)
                        .into_iter()
                        .map(|(name, value)| (name, value.unwrap_or_default()))
                        .collect()
                } else {
                    rest.split_once(char::is_whitespace)
                        .map(|(name, value)| vec![(name.to_owned(), value.trim().to_owned())])
                        .unwrap_or_default()
                };
                for (name, value) in pairs {
                    if LAYOUT_VARIABLES.contains(&name.as_str()) {
                        stage.skipped_env.push(format!(
                            "{name} ({from}: where the Dockerfile installed things)"
                        ));
                    } else if value.contains('$') {
                        stage
                            .skipped_env
                            .push(format!("{name} ({from}: names another variable)"));
                    } else {
                        stage.env.retain(|old| old.value.0 != name);
                        stage.env.push(sourced((name, value), &from));
                    }
                }
            }
            "COPY" | "ADD" => {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|word| !word.starts_with("--"))
                    .collect();
                if let [source, destination] = words.as_slice()
                    && matches!(*source, "." | "./")
                    && !rest.contains("--from")
                {
                    stage.app_folder = Some(sourced(absolute(destination, &workdir), &from));
                }
            }
            _ => {}
        }
    }
    stage
}

/// What the project in `root` declares: the final stage of its
/// `Dockerfile` first, then its `Procfile`'s `web` process for a command
/// the Dockerfile does not give.
pub fn declared(root: &Path) -> Declared {
    let mut declared = std::fs::read_to_string(root.join("Dockerfile"))
        .map(|text| dockerfile_stage(&text, "Dockerfile"))
        .unwrap_or_default();
    if declared.cmd.is_none()
        && declared.entrypoint.is_none()
        && let Some(web) = std::fs::read_to_string(root.join("Procfile"))
            .ok()
            .and_then(|text| procfile_web(&text))
    {
        declared.cmd = Some(Sourced {
            value: web,
            from: "Procfile (web)".into(),
        });
    }
    declared
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAKERY: &str = r#"ARG UV_VERSION=0.11.16
FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv
CMD ["not", "this"]

FROM python:3.12-slim
COPY --from=uv /uv /uvx /bin/
ADD requirements/ /requirements/
ENV VIRTUAL_ENV=/venv PATH=/venv/bin:$PATH PYTHONPATH=/code/
RUN mkdir /code/
WORKDIR /code/
ADD . /code/
ENV PORT=8000
EXPOSE 8000
ENV DJANGO_SETTINGS_MODULE=bakerydemo.settings.production DJANGO_DEBUG=off
ENTRYPOINT ["/code/docker-entrypoint.sh"]
CMD ["uwsgi", "/code/etc/uwsgi.ini"]
"#;

    #[test]
    fn the_final_stage_of_a_dockerfile_is_read_with_where_each_value_came_from() {
        let stage = dockerfile_stage(BAKERY, "Dockerfile");
        assert_eq!(stage.cmd.unwrap().value, ["uwsgi", "/code/etc/uwsgi.ini"]);
        let entrypoint = stage.entrypoint.unwrap();
        assert_eq!(entrypoint.value, ["/code/docker-entrypoint.sh"]);
        assert_eq!(entrypoint.from, "Dockerfile line 15");
        assert_eq!(stage.workdir.unwrap().value, "/code");
        assert_eq!(stage.app_folder.unwrap().value, "/code");
        let env: Vec<(String, String)> = stage.env.into_iter().map(|e| e.value).collect();
        assert_eq!(
            env,
            [
                ("PORT".to_owned(), "8000".to_owned()),
                (
                    "DJANGO_SETTINGS_MODULE".to_owned(),
                    "bakerydemo.settings.production".to_owned()
                ),
                ("DJANGO_DEBUG".to_owned(), "off".to_owned()),
            ]
        );
        assert_eq!(stage.skipped_env.len(), 3, "{:?}", stage.skipped_env);
        assert_eq!(stage.expose[0].value, "8000");
        assert_eq!(stage.user, None);
    }

    #[test]
    fn shell_forms_and_procfiles_become_argument_lists() {
        let stage = dockerfile_stage(
            "FROM x\nWORKDIR app\nWORKDIR src\nUSER 1000:1000\nENV MODE prod ready\nCMD gunicorn web:app --bind 0.0.0.0:$PORT\n",
            "Dockerfile",
        );
        assert_eq!(
            stage.cmd.unwrap().value,
            ["/bin/sh", "-c", "gunicorn web:app --bind 0.0.0.0:$PORT"]
        );
        assert_eq!(stage.workdir.unwrap().value, "/app/src");
        assert_eq!(stage.user.unwrap().value, "1000:1000");
        assert_eq!(
            stage.env[0].value,
            ("MODE".to_owned(), "prod ready".to_owned())
        );
        assert_eq!(
            procfile_web("release: python manage.py migrate\nweb: uwsgi ./etc/uwsgi.ini\n"),
            Some(vec!["uwsgi".to_owned(), "./etc/uwsgi.ini".to_owned()])
        );
        assert_eq!(
            procfile_web("web: gunicorn app:app --bind 0.0.0.0:$PORT"),
            Some(vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                "gunicorn app:app --bind 0.0.0.0:$PORT".to_owned()
            ])
        );
        assert_eq!(procfile_web("worker: celery -A x worker"), None);
    }
}
