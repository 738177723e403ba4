//! `ovnkube -h`, rendered in the reference (urfave/cli v1) layout from the clap declarations,
//! with the single-dash spellings the docs and the guide use (`-init-master`; `--init-master`
//! works too).

use clap::CommandFactory;

use super::flags::Flags;

/// Starts the section of flags the 2018 reference does not have.
pub(crate) const EXTENSIONS_HEADER: &str = "\nEXTENSIONS (not in the 2018 reference):\n";

pub(crate) fn render() -> String {
    let mut cmd = Flags::command();
    cmd.build();
    let (reference, extensions): (Vec<&clap::Arg>, Vec<&clap::Arg>) =
        cmd.get_arguments().partition(|a| !a.is_hide_set());
    let rows = |args: Vec<&clap::Arg>| -> Vec<(String, String)> {
        args.into_iter()
            .filter_map(|a| {
                let long = a.get_long()?;
                let is_bool = a.get_num_args().is_some_and(|r| r.min_values() == 0);
                let mut name = format!("-{long}");
                if !is_bool {
                    name.push_str(" value");
                }
                for alias in a.get_all_aliases().unwrap_or_default() {
                    name.push_str(&format!(", -{alias}"));
                }
                Some((
                    name,
                    a.get_help().map(|h| h.to_string()).unwrap_or_default(),
                ))
            })
            .collect()
    };
    let (rows, extensions) = (rows(reference), rows(extensions));
    // Descriptions start in the reference's column (34).
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0) + 3;
    let mut out = format!(
        "NAME:\n   ovnkube - run ovnkube to start master, node, and gateway services\n\n\
         USAGE:\n   ovnkube [global options] command [command options] [arguments...]\n\n\
         VERSION:\n   {}\n\n\
         COMMANDS:\n     help, h  Shows a list of commands or help for one command\n\n\
         GLOBAL OPTIONS:\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, help) in rows {
        out.push_str(&format!("   {name:<width$}{help}\n"));
    }
    if !extensions.is_empty() {
        out.push_str(EXTENSIONS_HEADER);
        let width = extensions.iter().map(|(n, _)| n.len()).max().unwrap_or(0) + 2;
        for (name, help) in extensions {
            out.push_str(&format!("   {name:<width$}{help}\n"));
        }
    }
    out
}
