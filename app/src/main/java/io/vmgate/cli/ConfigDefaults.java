package io.vmgate.cli;

import java.io.IOException;
import java.io.Reader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import picocli.CommandLine.IDefaultValueProvider;
import picocli.CommandLine.Model.ArgSpec;
import picocli.CommandLine.Model.OptionSpec;

/**
 * Where an option's value comes from when it is not on the command line: first the
 * environment ({@code --max-sessions} → {@code VMGATE_MAX_SESSIONS}), then the config
 * file ({@code max-sessions = 8}, Java properties syntax), then the built-in default.
 * So the precedence is flag > environment > file > default.
 */
final class ConfigDefaults implements IDefaultValueProvider {
    private final Map<String, String> env;
    private final Properties file;

    private ConfigDefaults(Map<String, String> env, Properties file) {
        this.env = env;
        this.file = file;
    }

    /** Finds the config file from {@code --config FILE} / {@code --config=FILE} in args, else {@code VMGATE_CONFIG}. */
    static ConfigDefaults from(String[] args, Map<String, String> env) throws IOException {
        String path = env.get("VMGATE_CONFIG");
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--config") && i + 1 < args.length) {
                path = args[i + 1];
            } else if (args[i].startsWith("--config=")) {
                path = args[i].substring("--config=".length());
            } else if (args[i].equals("--")) {
                break;
            }
        }
        Properties props = new Properties();
        if (path != null && !path.isBlank()) {
            try (Reader r = Files.newBufferedReader(Path.of(path))) {
                props.load(r);
            } catch (IOException e) {
                throw new IOException("cannot read config file " + path + ": " + e.getMessage(), e);
            }
        }
        return new ConfigDefaults(env, props);
    }

    static String envName(String longOption) {
        return "VMGATE_" + longOption.replaceFirst("^--", "").replace('-', '_').toUpperCase(Locale.ROOT);
    }

    @Override
    public String defaultValue(ArgSpec arg) {
        if (!(arg instanceof OptionSpec opt) || opt.longestName().equals("--config") || opt.usageHelp() || opt.versionHelp()) {
            return null;
        }
        String name = opt.longestName();
        String v = env.get(envName(name));
        if (v == null) {
            v = file.getProperty(name.replaceFirst("^--", ""));
        }
        return v == null ? null : v.strip();
    }
}
