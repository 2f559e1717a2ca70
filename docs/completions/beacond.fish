# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_beacond_global_optspecs
    string join \n h/help V/version
end

function __fish_beacond_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_beacond_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_beacond_using_subcommand
    set -l cmd (__fish_beacond_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c beacond -n "__fish_beacond_needs_command" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_needs_command" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "run" -d 'Run the daemon with a config file (what systemd starts)'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "check-config" -d 'Check a config file: print a summary and exit 0, or every problem with FILE:LINE:COL and exit 2'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "decode" -d 'Decode advertising payloads given as hex: one JSON object per input, in order'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "demo" -d 'Run the simulated store demo: the daemon\'s own pipeline on a built-in scenario, live'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "simulate" -d 'Run a store scenario through the real pipeline with a simulated clock, as fast as the CPU allows, and score the presence engine and a naive baseline against the ground truth'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "token" -d 'Compute the retailer app\'s rotating token (the reference for app developers; docs/app-token.md specifies it)'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "cache" -d 'Inspect or copy the customer cache in the data directory (stop the daemon first)'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "sync-publish" -d 'Sign sync batch files and publish them to a hub\'s broker, as the platform does (a reference for platform teams)'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "scan" -d 'What the hub hears, live: a table refreshed in place (or --json lines) of every beacon, customer and anonymous device, with raw and smoothed RSSI, distance, zone and rate'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "record" -d 'Record what the hub hears to FILE (JSON lines), to replay it later with `--source replay --replay FILE` or `[scan] source = "replay"`'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "calibrate" -d 'Calibrate a zone with a reference phone or beacon: RSSI at 1 m, at the zone\'s edge and outside it, then the measured power, enter and exit thresholds it suggests, with reasons'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "status" -d 'How the running daemon is doing, from its health endpoint ([health] listen): exit 0 when healthy, 1 when not, 2 when it cannot be asked'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "doctor" -d 'Check this hub before (or while) the daemon runs: the config, the data directory, the health endpoint, Bluetooth, the MQTT broker (a real login), whether another hub is online under this hub\'s id, whether the `[peers]` hubs are online there, the TLS certificates\' dates, customer sync and the clock, each with what to do when it is wrong'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "support-bundle" -d 'Gather what support needs into one .tar.gz to attach to a ticket: versions, the effective config, doctor\'s findings, the running daemon\'s status and metrics, what it learned, the service\'s state and its journal. Nothing in it identifies a person'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "offers" -d 'Offer rules: see what they would do'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "sync-keygen" -d 'Make a platform signing key for testing sync: writes the secret to FILE, prints the public key to put in identity.platform_public_key'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "completions" -d 'Print the shell completion script for bash, zsh, fish, elvish or powershell'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "man" -d 'Write the man pages (beacond.1 and one per command) into DIR'
complete -c beacond -n "__fish_beacond_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c beacond -n "__fish_beacond_using_subcommand run" -s c -l config -d 'The config file' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand run" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand run" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand check-config" -l effective -d 'Instead of the summary, print the config as the daemon would use it, as TOML: every key the file leaves out at its default, and what each zone inherits from [presence] and [hub] written out'
complete -c beacond -n "__fish_beacond_using_subcommand check-config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c beacond -n "__fish_beacond_using_subcommand check-config" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand decode" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c beacond -n "__fish_beacond_using_subcommand decode" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand demo" -l scenario -d 'A scenario file, or the name of a built-in one (boutique, supermarket, hard, pharmacy, electronics)' -r
complete -c beacond -n "__fish_beacond_using_subcommand demo" -l speed -d 'How many times faster than real time' -r
complete -c beacond -n "__fish_beacond_using_subcommand demo" -l duration -d 'Stop after this many seconds (wall clock)' -r
complete -c beacond -n "__fish_beacond_using_subcommand demo" -l warm-start-min -d 'Simulated minutes to run at once before the live view starts, so the store is busy' -r
complete -c beacond -n "__fish_beacond_using_subcommand demo" -l mqtt -d 'Also publish to this MQTT broker (mqtt://host:port)' -r
complete -c beacond -n "__fish_beacond_using_subcommand demo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c beacond -n "__fish_beacond_using_subcommand demo" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand simulate" -l filter -d 'Override the scenario\'s smoothing filter' -r -f -a "kalman_trend\t''
kalman\t''
trimmed_mean\t''
ewma\t''"
complete -c beacond -n "__fish_beacond_using_subcommand simulate" -l seed -d 'Draw shoppers and radio from this seed instead of the scenario\'s: the same store with other people in it, to check a tuning on runs it was not made on' -r
complete -c beacond -n "__fish_beacond_using_subcommand simulate" -l hours -d 'Run the store for this many hours instead of the scenario\'s own duration, shoppers arriving at the same rate: a p50 over one hour of a small store rests on a few dozen visits, so compare tunings on a long run' -r
complete -c beacond -n "__fish_beacond_using_subcommand simulate" -l set -d 'Change one setting of the scenario for this run, e.g. `--set radio.shadowing_sigma_db=1.5`, `--set zones.enter_rssi=-72` (every zone), `--set zones[1].enter_rssi=-70`, `--set presence.exit_margin_db=6`. Repeatable; later ones win' -r
complete -c beacond -n "__fish_beacond_using_subcommand simulate" -l share-lag-ms -d 'With `--per-hub`: the hubs share their observations of known devices (`[peers]`), each arriving at the other hubs this many ms after it was heard. Each hub\'s engine then holds every zone and reports its own' -r
complete -c beacond -n "__fish_beacond_using_subcommand simulate" -l json -d 'Print one JSON object (engine metrics at the top level, the baseline under "baseline")'
complete -c beacond -n "__fish_beacond_using_subcommand simulate" -l calibrate -d 'Instead of running the store, calibrate its zones as a field engineer would with `beacond calibrate` (a reference fob at 1 m, walked around each area\'s edge and just outside it) and compare the suggestion with the scenario\'s thresholds'
complete -c beacond -n "__fish_beacond_using_subcommand simulate" -l per-hub -d 'Score the store as deployed with one beacond per hub: each hub\'s engine hears only its own radio and decides only its own zones (engine and baseline alike), instead of one engine hearing every hub'
complete -c beacond -n "__fish_beacond_using_subcommand simulate" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand simulate" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand token" -l key -d 'The customer\'s long-term app key, 64 hex digits' -r
complete -c beacond -n "__fish_beacond_using_subcommand token" -l day-key -d 'Or that day\'s key, 64 hex digits (what the platform syncs to hubs)' -r
complete -c beacond -n "__fish_beacond_using_subcommand token" -l at -d 'The moment, RFC 3339 (e.g. 2026-11-25T10:03:00Z). Default: now' -r
complete -c beacond -n "__fish_beacond_using_subcommand token" -l epoch-s -d 'Seconds per epoch (identity.token_epoch_s)' -r
complete -c beacond -n "__fish_beacond_using_subcommand token" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand token" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and not __fish_seen_subcommand_from stats get export import help" -s c -l config -d 'The config file' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand cache; and not __fish_seen_subcommand_from stats get export import help" -l data-dir -d 'Use this data directory instead of the config\'s' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand cache; and not __fish_seen_subcommand_from stats get export import help" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and not __fish_seen_subcommand_from stats get export import help" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and not __fish_seen_subcommand_from stats get export import help" -f -a "stats" -d 'Customers, applied sync sequence, bytes on disk'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and not __fish_seen_subcommand_from stats get export import help" -f -a "get" -d 'One customer as JSON'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and not __fish_seen_subcommand_from stats get export import help" -f -a "export" -d 'Every customer as JSON lines (after a header line), to stdout or a file'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and not __fish_seen_subcommand_from stats get export import help" -f -a "import" -d 'Replace the cache with an export, atomically (a bad line changes nothing)'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and not __fish_seen_subcommand_from stats get export import help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from stats" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from stats" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from get" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from get" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from export" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from import" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "stats" -d 'Customers, applied sync sequence, bytes on disk'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "get" -d 'One customer as JSON'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "export" -d 'Every customer as JSON lines (after a header line), to stdout or a file'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "import" -d 'Replace the cache with an export, atomically (a bad line changes nothing)'
complete -c beacond -n "__fish_beacond_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c beacond -n "__fish_beacond_using_subcommand sync-publish" -l key -d 'The platform\'s secret key file (64 hex digits; `beacond sync-keygen` makes one)' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand sync-publish" -l url -d 'The broker' -r
complete -c beacond -n "__fish_beacond_using_subcommand sync-publish" -l prefix -d 'The topic prefix (mqtt.topic_prefix)' -r
complete -c beacond -n "__fish_beacond_using_subcommand sync-publish" -l chunk-size -d 'Split snapshots without chunk fields into chunks of this many customers' -r
complete -c beacond -n "__fish_beacond_using_subcommand sync-publish" -l print -d 'Print the signed payloads (one per line pair) instead of publishing'
complete -c beacond -n "__fish_beacond_using_subcommand sync-publish" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand sync-publish" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand scan" -s c -l config -d 'A config file (zones, filters, adapter, customer cache). Without one: defaults' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand scan" -l source -d 'Listen to this source instead of the config\'s' -r -f -a "bluez\t''
replay\t''
sim\t''"
complete -c beacond -n "__fish_beacond_using_subcommand scan" -l scenario -d 'For --source sim: a scenario file or built-in name (and its zones, without --config)' -r
complete -c beacond -n "__fish_beacond_using_subcommand scan" -l replay -d 'For --source replay: the recording' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand scan" -l speed -d 'Playback speed for sim and replay' -r
complete -c beacond -n "__fish_beacond_using_subcommand scan" -l adapter -d 'For bluez: "auto" or an adapter name like hci1' -r
complete -c beacond -n "__fish_beacond_using_subcommand scan" -l sort -d 'Row order' -r -f -a "rssi\t'Strongest smoothed RSSI first'
last-seen\t'Most recently heard first'
rate\t'Most adverts per second first'
id\t'By label'
zone\t'By zone, then strongest'"
complete -c beacond -n "__fish_beacond_using_subcommand scan" -l match -d 'Only rows whose id, kind or zone contains this text' -r
complete -c beacond -n "__fish_beacond_using_subcommand scan" -l duration -d 'Stop after this many seconds' -r
complete -c beacond -n "__fish_beacond_using_subcommand scan" -l rows -d 'Rows shown in the table' -r
complete -c beacond -n "__fish_beacond_using_subcommand scan" -l json -d 'One JSON object per line for each row heard since the last refresh, instead of the table'
complete -c beacond -n "__fish_beacond_using_subcommand scan" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c beacond -n "__fish_beacond_using_subcommand scan" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand record" -s c -l config -d 'A config file (zones, filters, adapter, customer cache). Without one: defaults' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand record" -l source -d 'Listen to this source instead of the config\'s' -r -f -a "bluez\t''
replay\t''
sim\t''"
complete -c beacond -n "__fish_beacond_using_subcommand record" -l scenario -d 'For --source sim: a scenario file or built-in name (and its zones, without --config)' -r
complete -c beacond -n "__fish_beacond_using_subcommand record" -l replay -d 'For --source replay: the recording' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand record" -l speed -d 'Playback speed for sim and replay' -r
complete -c beacond -n "__fish_beacond_using_subcommand record" -l adapter -d 'For bluez: "auto" or an adapter name like hci1' -r
complete -c beacond -n "__fish_beacond_using_subcommand record" -l duration -d 'Stop after this many seconds (otherwise Ctrl-C, or the end of a simulation)' -r
complete -c beacond -n "__fish_beacond_using_subcommand record" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c beacond -n "__fish_beacond_using_subcommand record" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -l zone -d 'The zone\'s id in the config' -r
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -s c -l config -d 'A config file (zones, filters, adapter, customer cache). Without one: defaults' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -l source -d 'Listen to this source instead of the config\'s' -r -f -a "bluez\t''
replay\t''
sim\t''"
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -l scenario -d 'For --source sim: a scenario file or built-in name (and its zones, without --config)' -r
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -l replay -d 'For --source replay: the recording' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -l speed -d 'Playback speed for sim and replay' -r
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -l adapter -d 'For bluez: "auto" or an adapter name like hci1' -r
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -l device -d 'The reference device\'s id as `beacond scan` shows it (default: the strongest at 1 m)' -r
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -l seconds -d 'Seconds of listening per phase' -r
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -l edge-m -d 'The edge\'s distance from the hub in metres, to suggest the path-loss exponent too' -r
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -l yes -d 'Do not wait for Enter between phases (for a recording made phase after phase)'
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -l write -d 'Edit the zone in the --config file in place (comments kept; checked before writing)'
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand calibrate" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand status" -s c -l config -d 'The config file' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand status" -l json -d 'Print the daemon\'s JSON instead'
complete -c beacond -n "__fish_beacond_using_subcommand status" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand status" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand doctor" -s c -l config -d 'The config file' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand doctor" -l json -d 'One JSON object: {"config": FILE, "ok": bool, "checks": [{"check", "status", "detail"}]}'
complete -c beacond -n "__fish_beacond_using_subcommand doctor" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c beacond -n "__fish_beacond_using_subcommand doctor" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand support-bundle" -s c -l config -d 'The config file' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand support-bundle" -s o -l output -d 'Where to write it [default: ./beacond-support-STORE-HUB-TIME.tar.gz]' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand support-bundle" -l since -d 'How far back the journal goes, as journalctl --since takes it' -r
complete -c beacond -n "__fish_beacond_using_subcommand support-bundle" -l no-doctor -d 'Skip doctor\'s checks (they log in to the broker, which can take 10 s)'
complete -c beacond -n "__fish_beacond_using_subcommand support-bundle" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c beacond -n "__fish_beacond_using_subcommand support-bundle" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand offers; and not __fish_seen_subcommand_from explain help" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand offers; and not __fish_seen_subcommand_from explain help" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand offers; and not __fish_seen_subcommand_from explain help" -f -a "explain" -d 'Which rules fire for one customer\'s simulated visit, and why the others do not (zone, trigger, segment, days, hours, quiet hours, cooldown, budget, visit limit, priority)'
complete -c beacond -n "__fish_beacond_using_subcommand offers; and not __fish_seen_subcommand_from explain help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c beacond -n "__fish_beacond_using_subcommand offers; and __fish_seen_subcommand_from explain" -l customer -d 'The customer (in the simulated store: cust-00001, cust-00002, …)' -r
complete -c beacond -n "__fish_beacond_using_subcommand offers; and __fish_seen_subcommand_from explain" -l scenario -d 'The simulated store (its zones, shoppers and, without --config, its offer rules)' -r
complete -c beacond -n "__fish_beacond_using_subcommand offers; and __fish_seen_subcommand_from explain" -s c -l config -d 'Take the [[offers]], [offer_limits] and hub.timezone of this config instead' -r -F
complete -c beacond -n "__fish_beacond_using_subcommand offers; and __fish_seen_subcommand_from explain" -l segments -d 'Pretend the customer is in these segments (comma-separated)' -r
complete -c beacond -n "__fish_beacond_using_subcommand offers; and __fish_seen_subcommand_from explain" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand offers; and __fish_seen_subcommand_from explain" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand offers; and __fish_seen_subcommand_from help" -f -a "explain" -d 'Which rules fire for one customer\'s simulated visit, and why the others do not (zone, trigger, segment, days, hours, quiet hours, cooldown, budget, visit limit, priority)'
complete -c beacond -n "__fish_beacond_using_subcommand offers; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c beacond -n "__fish_beacond_using_subcommand sync-keygen" -s h -l help -d 'Print help'
complete -c beacond -n "__fish_beacond_using_subcommand sync-keygen" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c beacond -n "__fish_beacond_using_subcommand completions" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c beacond -n "__fish_beacond_using_subcommand man" -s V -l version -d 'Print version'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "run" -d 'Run the daemon with a config file (what systemd starts)'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "check-config" -d 'Check a config file: print a summary and exit 0, or every problem with FILE:LINE:COL and exit 2'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "decode" -d 'Decode advertising payloads given as hex: one JSON object per input, in order'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "demo" -d 'Run the simulated store demo: the daemon\'s own pipeline on a built-in scenario, live'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "simulate" -d 'Run a store scenario through the real pipeline with a simulated clock, as fast as the CPU allows, and score the presence engine and a naive baseline against the ground truth'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "token" -d 'Compute the retailer app\'s rotating token (the reference for app developers; docs/app-token.md specifies it)'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "cache" -d 'Inspect or copy the customer cache in the data directory (stop the daemon first)'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "sync-publish" -d 'Sign sync batch files and publish them to a hub\'s broker, as the platform does (a reference for platform teams)'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "scan" -d 'What the hub hears, live: a table refreshed in place (or --json lines) of every beacon, customer and anonymous device, with raw and smoothed RSSI, distance, zone and rate'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "record" -d 'Record what the hub hears to FILE (JSON lines), to replay it later with `--source replay --replay FILE` or `[scan] source = "replay"`'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "calibrate" -d 'Calibrate a zone with a reference phone or beacon: RSSI at 1 m, at the zone\'s edge and outside it, then the measured power, enter and exit thresholds it suggests, with reasons'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "status" -d 'How the running daemon is doing, from its health endpoint ([health] listen): exit 0 when healthy, 1 when not, 2 when it cannot be asked'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "doctor" -d 'Check this hub before (or while) the daemon runs: the config, the data directory, the health endpoint, Bluetooth, the MQTT broker (a real login), whether another hub is online under this hub\'s id, whether the `[peers]` hubs are online there, the TLS certificates\' dates, customer sync and the clock, each with what to do when it is wrong'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "support-bundle" -d 'Gather what support needs into one .tar.gz to attach to a ticket: versions, the effective config, doctor\'s findings, the running daemon\'s status and metrics, what it learned, the service\'s state and its journal. Nothing in it identifies a person'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "offers" -d 'Offer rules: see what they would do'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "sync-keygen" -d 'Make a platform signing key for testing sync: writes the secret to FILE, prints the public key to put in identity.platform_public_key'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "completions" -d 'Print the shell completion script for bash, zsh, fish, elvish or powershell'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "man" -d 'Write the man pages (beacond.1 and one per command) into DIR'
complete -c beacond -n "__fish_beacond_using_subcommand help; and not __fish_seen_subcommand_from run check-config decode demo simulate token cache sync-publish scan record calibrate status doctor support-bundle offers sync-keygen completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c beacond -n "__fish_beacond_using_subcommand help; and __fish_seen_subcommand_from cache" -f -a "stats" -d 'Customers, applied sync sequence, bytes on disk'
complete -c beacond -n "__fish_beacond_using_subcommand help; and __fish_seen_subcommand_from cache" -f -a "get" -d 'One customer as JSON'
complete -c beacond -n "__fish_beacond_using_subcommand help; and __fish_seen_subcommand_from cache" -f -a "export" -d 'Every customer as JSON lines (after a header line), to stdout or a file'
complete -c beacond -n "__fish_beacond_using_subcommand help; and __fish_seen_subcommand_from cache" -f -a "import" -d 'Replace the cache with an export, atomically (a bad line changes nothing)'
complete -c beacond -n "__fish_beacond_using_subcommand help; and __fish_seen_subcommand_from offers" -f -a "explain" -d 'Which rules fire for one customer\'s simulated visit, and why the others do not (zone, trigger, segment, days, hours, quiet hours, cooldown, budget, visit limit, priority)'
