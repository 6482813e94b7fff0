/**
 * Default locations of the containers configuration files, in a module of
 * their own so the CLI can show them in --help without loading the parsers.
 */
export const defaultPolicyPath = '/etc/containers/policy.json';
export const defaultRegistriesDPath = '/etc/containers/registries.d';
