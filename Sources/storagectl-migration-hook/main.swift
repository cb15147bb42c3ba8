import MigrationHook

// libvirt's qemu hook (docs/migration.md, "The hook"): everything lives in MigrationHook.
HookMain.run(arguments: Array(CommandLine.arguments.dropFirst()))
