package io.vmgate.cli;

import ch.qos.logback.classic.LoggerContext;
import ch.qos.logback.classic.spi.Configurator;
import ch.qos.logback.core.spi.ContextAwareBase;

/**
 * Logback's configuration before the CLI sets the real one: found through ServiceLoader,
 * so logback never parses an XML file (that costs a few hundred milliseconds of start-up,
 * which `vmgate run` would add to every VM).
 */
public final class DefaultLogConfigurator extends ContextAwareBase implements Configurator {
    @Override
    public ExecutionStatus configure(LoggerContext context) {
        Logging.configure(context, Logging.Format.text, Logging.initialLevel());
        return ExecutionStatus.DO_NOT_INVOKE_NEXT_IF_ANY;
    }
}
