_lashctl_completion() {
    local IFS=$'\n'
    local reply
    reply=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _LASHCTL_COMPLETE=complete_bash $1 ) )
    if [[ "${reply[0]}" == "::files" ]]; then
        # A path goes here: let bash complete file names.
        compopt -o default
        COMPREPLY=()
    else
        COMPREPLY=( "${reply[@]}" )
        # A directory or a URL scheme goes on: no space after it.
        [[ ${#COMPREPLY[@]} == 1 && "${COMPREPLY[0]}" == *[/:] ]] && compopt -o nospace
    fi
    return 0
}

complete -F _lashctl_completion lashctl
