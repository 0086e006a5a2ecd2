package io.vmgate.image;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Resolves kernel module names to the {@code .ko} files to load, dependencies first, from
 * {@code modules.dep} and {@code modules.builtin} — what modprobe would do, without modprobe
 * (the guest has none, and the agent loads files with finit_module in the order we give).
 */
public final class KernelModules {
    private KernelModules() {}

    /**
     * Returns paths relative to {@code /lib/modules/<release>} (e.g. {@code kernel/drivers/virtio/virtio.ko})
     * in load order. Modules built into the kernel are skipped: there is nothing to load.
     */
    public static List<String> resolve(Path modulesDir, List<String> wanted) throws ImageException {
        String dep = read(modulesDir.resolve("modules.dep"));
        String builtin;
        try {
            builtin = Files.readString(modulesDir.resolve("modules.builtin"));
        } catch (NoSuchFileException e) {
            builtin = ""; // old or unusual kernels: treat nothing as built in
        } catch (IOException e) {
            throw new ImageException("cannot read " + modulesDir.resolve("modules.builtin") + ": " + e.getMessage(), e);
        }
        return resolve(dep, builtin, wanted, modulesDir.toString());
    }

    /** The same, from the two files' text; {@code where} names the directory in error messages. */
    public static List<String> resolve(String modulesDep, String modulesBuiltin, List<String> wanted, String where)
            throws ImageException {
        Map<String, String> pathByName = new HashMap<>();
        Map<String, List<String>> depsByPath = new HashMap<>();
        for (String line : modulesDep.split("\n")) {
            int colon = line.indexOf(':');
            if (colon <= 0) {
                continue;
            }
            String path = line.substring(0, colon).trim();
            String rest = line.substring(colon + 1).trim();
            List<String> deps = rest.isEmpty() ? List.of() : List.of(rest.split("\\s+"));
            depsByPath.put(path, deps);
            pathByName.put(moduleName(path), path);
        }
        Set<String> builtin = new HashSet<>();
        for (String line : modulesBuiltin.split("\n")) {
            if (!line.isBlank()) {
                builtin.add(moduleName(line.trim()));
            }
        }

        LinkedHashSet<String> order = new LinkedHashSet<>();
        for (String w : wanted) {
            String name = canonical(w);
            if (builtin.contains(name)) {
                continue;
            }
            String path = pathByName.get(name);
            if (path == null) {
                throw new ImageException("kernel module " + w + " is neither in " + where + "/modules.dep nor built in; "
                        + "the kernel package looks incomplete: reinstall it with `apt-get install --reinstall linux-image-cloud-amd64`");
            }
            visit(path, depsByPath, builtin, order, new HashSet<>(), where);
        }
        return List.copyOf(order);
    }

    /** Depth-first, post-order: every module after all of its dependencies. */
    private static void visit(String path, Map<String, List<String>> depsByPath, Set<String> builtin,
            LinkedHashSet<String> order, Set<String> onStack, String where) throws ImageException {
        if (order.contains(path)) {
            return;
        }
        if (!onStack.add(path)) {
            throw new ImageException("dependency cycle through " + path + " in " + where + "/modules.dep");
        }
        List<String> deps = depsByPath.get(path);
        if (deps == null) {
            throw new ImageException(path + " is a dependency in " + where + "/modules.dep but has no entry of its own; "
                    + "run `depmod` for that kernel or reinstall the kernel package");
        }
        // modules.dep lists dependencies last-to-load first; walk them reversed to keep modprobe's order.
        List<String> reversed = new ArrayList<>(deps);
        java.util.Collections.reverse(reversed);
        for (String d : reversed) {
            if (!builtin.contains(moduleName(d))) {
                visit(d, depsByPath, builtin, order, onStack, where);
            }
        }
        onStack.remove(path);
        order.add(path);
    }

    /** {@code kernel/drivers/char/hw_random/virtio-rng.ko.xz} → {@code virtio_rng}. */
    static String moduleName(String path) {
        String base = path.substring(path.lastIndexOf('/') + 1);
        int ko = base.indexOf(".ko");
        if (ko >= 0) {
            base = base.substring(0, ko);
        }
        return canonical(base);
    }

    /** The kernel treats '-' and '_' in module names as the same character. */
    private static String canonical(String name) {
        return name.replace('-', '_');
    }

    private static String read(Path p) throws ImageException {
        try {
            return Files.readString(p);
        } catch (NoSuchFileException e) {
            throw new ImageException(p + " not found: the kernel's modules are missing; install them with "
                    + "`apt-get install linux-image-cloud-amd64` (the package that also provides the kernel)");
        } catch (IOException e) {
            throw new ImageException("cannot read " + p + ": " + e.getMessage(), e);
        }
    }
}
