//! `zfs2cloud man`: the manual page zfs2cloud(1), generated from the clap
//! definition, with every subcommand's synopsis, description and options
//! in one page.

use std::io;

use clap::CommandFactory as _;
use clap_mangen::Man;

use crate::args::Cli;
use crate::cmd::completions::write_stdout;

/// Prints zfs2cloud(1) in roff on stdout.
///
/// # Errors
///
/// Only if stdout cannot be written (a closed pipe is not an error).
pub fn run() -> anyhow::Result<()> {
    write_stdout(page()?.as_bytes())
}

/// The page: the top command's title, synopsis, description and global
/// options, then COMMANDS with one subsection per subcommand, then the
/// version. (clap_mangen's own subcommand list names one page per
/// subcommand, zfs2cloud-backup(1), which would not exist.)
///
/// # Errors
///
/// Only if rendering into memory fails, which would be a bug.
pub fn page() -> io::Result<String> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let man = Man::new(command.clone());
    let mut page = String::new();
    // The title carries the preamble (string definitions) every render
    // repeats; the other parts are taken without it.
    page.push_str(&rendered(|w| man.render_title(w))?);
    page.push_str(&body(|w| man.render_name_section(w))?);
    page.push_str(&body(|w| man.render_synopsis_section(w))?);
    page.push_str(&body(|w| man.render_description_section(w))?);
    page.push_str(&body(|w| man.render_options_section(w))?);
    page.push_str(".SH COMMANDS\n");
    let globals: Vec<String> = command
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| a.get_id().to_string())
        .collect();
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        page.push_str(&subcommand(sub, &globals)?);
    }
    page.push_str(&body(|w| man.render_version_section(w))?);
    Ok(page)
}

/// One subcommand as `.SS zfs2cloud backup`: its synopsis, description,
/// the names it is also accepted by, and its own options (the global
/// ones, --help and --version are documented once, at the top).
fn subcommand(sub: &clap::Command, globals: &[String]) -> io::Result<String> {
    let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
    let mut own = sub.clone();
    for id in globals
        .iter()
        .map(String::as_str)
        .chain(["help", "version"])
    {
        if own.get_arguments().any(|a| a.get_id() == id) {
            own = own.mut_arg(id, |a| a.hide(true));
        }
    }
    let has_options = own.get_arguments().any(|a| !a.is_hide_set());
    let man = Man::new(own);
    let mut text = format!(".SS \"{name}\"\n");
    text.push_str(&section_content(|w| man.render_synopsis_section(w))?);
    text.push_str(".PP\n");
    text.push_str(&section_content(|w| man.render_description_section(w))?);
    let aliases: Vec<&str> = sub.get_all_aliases().collect();
    if !aliases.is_empty() {
        text.push_str(&format!(
            ".PP\nAlso accepted as: {} (the original zfs2cloud's name).\n",
            aliases.join(", ")
        ));
    }
    if has_options {
        text.push_str(&section_content(|w| man.render_options_section(w))?);
    }
    Ok(text)
}

/// What `render` writes.
fn rendered(render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<String> {
    let mut roff = Vec::new();
    render(&mut roff)?;
    String::from_utf8(roff).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What `render` writes, without the preamble of string definitions.
fn body(render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<String> {
    Ok(rendered(render)?
        .lines()
        .filter(|l| !l.starts_with(".ie \\n(.g .ds Aq") && !l.starts_with(".el .ds Aq"))
        .map(|l| format!("{l}\n"))
        .collect())
}

/// A rendered section without its `.SH` heading: the content, to go under
/// a subsection of our own.
fn section_content(render: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<String> {
    Ok(body(render)?
        .lines()
        .filter(|l| !l.starts_with(".SH "))
        .map(|l| format!("{l}\n"))
        .collect())
}
