package io.vmgate;

import static com.tngtech.archunit.lang.syntax.ArchRuleDefinition.classes;
import static com.tngtech.archunit.lang.syntax.ArchRuleDefinition.noClasses;
import static com.tngtech.archunit.library.Architectures.layeredArchitecture;
import static com.tngtech.archunit.library.dependencies.SlicesRuleDefinition.slices;
import static org.assertj.core.api.Assertions.assertThat;

import com.tngtech.archunit.core.domain.JavaClasses;
import com.tngtech.archunit.core.importer.ClassFileImporter;
import com.tngtech.archunit.core.importer.ImportOption;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The layout shows the architecture, and this keeps it so: every package has one job and a
 * one-line purpose, dependencies point only down, and the front ends stand on the Sandbox API, not
 * on QEMU or the agent's wire. Adding a package means placing it here.
 *
 * <pre>
 *   cli ─────────┐                     the vmgate command (app module)
 *   metrics  control                   Prometheus metrics and health; the control socket (app module)
 *   sandbox      │  public API         options, engine, sandboxes, enableSsh
 *   ssh ◄────────┘                     the SSH front door, over any Guest
 *   vm.qemu  egress                    QEMU driver, QMP, runtime dirs, templates; the egress policy and proxy end
 *   vm                                 the launcher contract, warm pool
 *   agent    image    record           agent protocol client and wire; images; session recordings
 *   exec     text                      commands, executions, the stream bridge; JSON and key=value (JDK only)
 * </pre>
 */
class LayeringTest {
    private static final List<String> PACKAGES = List.of("io.vmgate.cli", "io.vmgate.metrics", "io.vmgate.control",
            "io.vmgate.sandbox", "io.vmgate.ssh", "io.vmgate.egress", "io.vmgate.vm.qemu", "io.vmgate.vm", "io.vmgate.agent", "io.vmgate.image", "io.vmgate.image.oci",
            "io.vmgate.record", "io.vmgate.exec", "io.vmgate.text");

    private static JavaClasses classes;

    @BeforeAll
    static void importMainClasses() {
        classes = new ClassFileImporter()
                .withImportOption(ImportOption.Predefined.DO_NOT_INCLUDE_TESTS)
                .withImportOption(location -> !location.contains("-tests.jar"))
                .importPackages("io.vmgate");
        assertThat(classes).as("the main classes of both modules are on the test classpath").hasSizeGreaterThan(100);
    }

    @Test
    void dependenciesPointOnlyDown() {
        layeredArchitecture().consideringOnlyDependenciesInLayers()
                .layer("cli").definedBy("io.vmgate.cli..")
                .layer("metrics").definedBy("io.vmgate.metrics..")
                .layer("control").definedBy("io.vmgate.control..")
                .layer("sandbox").definedBy("io.vmgate.sandbox..")
                .layer("ssh").definedBy("io.vmgate.ssh..")
                .layer("egress").definedBy("io.vmgate.egress..")
                .layer("qemu").definedBy("io.vmgate.vm.qemu..")
                .layer("vm").definedBy("io.vmgate.vm")
                .layer("agent").definedBy("io.vmgate.agent..")
                .layer("image").definedBy("io.vmgate.image..")
                .layer("record").definedBy("io.vmgate.record..")
                .layer("exec").definedBy("io.vmgate.exec..")
                .layer("text").definedBy("io.vmgate.text..")
                .whereLayer("cli").mayNotBeAccessedByAnyLayer()
                .whereLayer("metrics").mayOnlyBeAccessedByLayers("cli")
                .whereLayer("control").mayOnlyBeAccessedByLayers("cli")
                .whereLayer("sandbox").mayOnlyBeAccessedByLayers("cli", "metrics")
                .whereLayer("ssh").mayOnlyBeAccessedByLayers("sandbox", "cli", "metrics", "control")
                .whereLayer("egress").mayOnlyBeAccessedByLayers("sandbox")
                .whereLayer("qemu").mayOnlyBeAccessedByLayers("sandbox")
                .whereLayer("vm").mayOnlyBeAccessedByLayers("qemu", "sandbox")
                .whereLayer("agent").mayOnlyBeAccessedByLayers("vm", "qemu", "egress", "sandbox")
                .whereLayer("image").mayOnlyBeAccessedByLayers("vm", "qemu", "sandbox", "cli")
                .whereLayer("record").mayOnlyBeAccessedByLayers("ssh", "sandbox", "cli")
                .whereLayer("exec").mayOnlyBeAccessedByLayers("agent", "vm", "qemu", "ssh", "sandbox", "cli")
                .whereLayer("text").mayOnlyBeAccessedByLayers("record", "ssh", "sandbox", "control", "cli", "qemu", "image", "egress")
                .because("front ends stand on the Sandbox API; only the engine knows QEMU and the agent's wire")
                .check(classes);
    }

    @Test
    void noPackageCycles() {
        slices().matching("io.vmgate.(**)").should().beFreeOfCycles().check(classes);
    }

    @Test
    void everyClassLivesInAKnownLayer() {
        classes().should().resideInAnyPackage(PACKAGES.toArray(String[]::new))
                .because("a new package is a new layer: place it in dependenciesPointOnlyDown()")
                .check(classes);
    }

    @Test
    void theAgentsWireStaysInsideTheAgentPackage() {
        noClasses().that().resideOutsideOfPackage("io.vmgate.agent")
                .should().dependOnClassesThat().haveFullyQualifiedName("io.vmgate.agent.Frame")
                .orShould().dependOnClassesThat().haveFullyQualifiedName("io.vmgate.agent.Payload")
                .orShould().dependOnClassesThat().haveFullyQualifiedName("io.vmgate.agent.Protocol")
                .orShould().dependOnClassesThat().haveFullyQualifiedName("io.vmgate.agent.ProtocolException")
                .check(classes);
    }

    @Test
    void theLibraryLogsThroughTheSlf4jApiOnly() {
        noClasses().that().resideOutsideOfPackage("io.vmgate.cli")
                .should().dependOnClassesThat().resideInAnyPackage("ch.qos.logback..", "picocli..")
                .because("vmgate-core is embedded in other programs: their logging is theirs to configure")
                .check(classes);
    }

    @Test
    void theLibraryKnowsNothingOfPrometheus() {
        noClasses().that().resideOutsideOfPackages("io.vmgate.metrics")
                .should().dependOnClassesThat().resideInAnyPackage("io.prometheus..")
                .because("the library reports to observer interfaces (SshObserver, SandboxObserver); the app counts")
                .check(classes);
    }

    /** Every package says its one job in a package-info.java with a doc comment. */
    @Test
    void everyPackageStatesItsPurpose() throws IOException {
        Path home = Path.of(System.getProperty("vmgate.home", "..")).toAbsolutePath().normalize();
        List<String> missing = new ArrayList<>();
        for (Path src : List.of(home.resolve("core/src/main/java"), home.resolve("app/src/main/java"))) {
            try (Stream<Path> dirs = Files.walk(src)) {
                for (Path dir : dirs.filter(Files::isDirectory).toList()) {
                    boolean hasClasses;
                    try (Stream<Path> files = Files.list(dir)) {
                        hasClasses = files.anyMatch(f -> f.toString().endsWith(".java") && !f.endsWith("package-info.java"));
                    }
                    Path info = dir.resolve("package-info.java");
                    if (hasClasses && (!Files.exists(info) || !Files.readString(info).contains("/**"))) {
                        missing.add(src.relativize(dir).toString());
                    }
                }
            }
        }
        assertThat(missing).as("packages without a package-info.java doc comment").isEmpty();
    }
}
