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
 *   sandbox      │  public API         options, engine, sandboxes, enableSsh
 *   ssh ◄────────┘                     the SSH front door, over any Guest
 *   vm.qemu                            QEMU driver, QMP, runtime dirs, snapshot templates
 *   vm                                 the launcher contract, warm pool
 *   agent    image                     agent protocol client and wire; images
 *   exec                               commands, executions, the stream bridge (JDK only)
 * </pre>
 */
class LayeringTest {
    private static final List<String> PACKAGES = List.of("io.vmgate.cli", "io.vmgate.sandbox", "io.vmgate.ssh",
            "io.vmgate.vm.qemu", "io.vmgate.vm", "io.vmgate.agent", "io.vmgate.image", "io.vmgate.image.oci", "io.vmgate.exec");

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
                .layer("sandbox").definedBy("io.vmgate.sandbox..")
                .layer("ssh").definedBy("io.vmgate.ssh..")
                .layer("qemu").definedBy("io.vmgate.vm.qemu..")
                .layer("vm").definedBy("io.vmgate.vm")
                .layer("agent").definedBy("io.vmgate.agent..")
                .layer("image").definedBy("io.vmgate.image..")
                .layer("exec").definedBy("io.vmgate.exec..")
                .whereLayer("cli").mayNotBeAccessedByAnyLayer()
                .whereLayer("sandbox").mayOnlyBeAccessedByLayers("cli")
                .whereLayer("ssh").mayOnlyBeAccessedByLayers("sandbox", "cli")
                .whereLayer("qemu").mayOnlyBeAccessedByLayers("sandbox")
                .whereLayer("vm").mayOnlyBeAccessedByLayers("qemu", "sandbox")
                .whereLayer("agent").mayOnlyBeAccessedByLayers("vm", "qemu", "sandbox")
                .whereLayer("image").mayOnlyBeAccessedByLayers("vm", "qemu", "sandbox", "cli")
                .whereLayer("exec").mayOnlyBeAccessedByLayers("agent", "vm", "qemu", "ssh", "sandbox", "cli")
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
